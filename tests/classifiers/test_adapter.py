"""LoRA adapters: the artefact format, merging at load time, the shared-trunk encoder and the fine-tuning script."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from classifiers.adapter import ADAPTER_NAME, TARGETS, AdapterError, load_adapter, write_adapter
from classifiers.encoder import Encoder
from classifiers.heads import Heads, HeadsError, HeadWeights, LexicalVariant, write_heads
from classifiers.lexical import FEATURES, lexical_features
from classifiers.pipeline import Pipeline
from classifiers.training.finetune import (
    FinetuneConfig,
    _load_model,
    _pooled,
    export,
    finetune,
    inject_lora,
    topic_accuracy,
)
from classifiers.training.finetune import main as finetune_main

TEXTS = ["Why is the canteen closed again?", "Great work on the new payslips!", "ok", "The VPN drops every hour."]


def _random_factors(
    layers: tuple[int, ...], rank: int, seed: int, *, zero_b: bool = False
) -> dict[tuple[int, str], tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    shapes = {
        "attention.self.query": (384, 384),
        "attention.self.key": (384, 384),
        "attention.self.value": (384, 384),
        "attention.output.dense": (384, 384),
        "intermediate.dense": (1536, 384),
        "output.dense": (384, 1536),
    }
    out = {}
    for layer in layers:
        for target in TARGETS:
            rows, cols = shapes[target]
            a = rng.normal(0, 0.05, (rank, cols)).astype(np.float32)
            b = np.zeros((rows, rank), np.float32) if zero_b else rng.normal(0, 0.05, (rows, rank)).astype(np.float32)
            out[(layer, target)] = (a, b)
    return out


@pytest.fixture(scope="module")
def random_adapter(tmp_path_factory: pytest.TempPathFactory, encoder: Encoder) -> Path:
    folder = tmp_path_factory.mktemp("adapter")
    write_adapter(
        folder, _random_factors((4, 5), 4, 0), base_version=encoder.base_version, rank=4, alpha=8.0, date="2026-01-01"
    )
    return folder


def test_adapter_round_trips_and_is_small(random_adapter: Path, tmp_path: Path, encoder: Encoder) -> None:
    adapter = load_adapter(random_adapter)
    assert adapter.layers == (4, 5)
    assert adapter.rank == 4
    assert adapter.scale == 2.0
    assert adapter.version.startswith("lora-")
    assert (random_adapter / ADAPTER_NAME).stat().st_size < 200_000
    again = tmp_path / "again"
    write_adapter(
        again, _random_factors((4, 5), 4, 0), base_version=encoder.base_version, rank=4, alpha=8.0, date="2026-01-01"
    )
    assert (again / ADAPTER_NAME).read_bytes() == (random_adapter / ADAPTER_NAME).read_bytes()


def test_broken_or_foreign_adapters_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_adapter(tmp_path)
    (tmp_path / ADAPTER_NAME).write_bytes(b"not a zip")
    with pytest.raises(AdapterError):
        load_adapter(tmp_path)
    other = tmp_path / "other"
    write_adapter(
        other, _random_factors((5,), 2, 1), base_version="some-other-model@1", rank=2, alpha=2.0, date="2026-01-01"
    )
    with pytest.raises(ValueError, match="trained on"):
        Encoder(adapter=other)


def test_adapted_encoder_keeps_the_plain_embedding_and_changes_the_heads_one(
    random_adapter: Path, encoder: Encoder
) -> None:
    adapted = Encoder(adapter=random_adapter, backend="torch")
    assert adapted.model_version == f"{encoder.base_version}+{load_adapter(random_adapter).version}"
    assert adapted.base_version == encoder.base_version
    plain = Encoder(adapter=False, backend="torch")
    np.testing.assert_allclose(adapted.encode(TEXTS), plain.encode(TEXTS), atol=1e-6)
    both_plain, both_heads = adapted.encode_both(TEXTS)
    np.testing.assert_allclose(both_plain, plain.encode(TEXTS), atol=1e-5)
    heads = adapted.encode_heads(TEXTS)
    np.testing.assert_allclose(both_heads, heads, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(heads, axis=1), 1.0, atol=1e-5)
    assert np.abs(heads - both_plain).max() > 1e-3


def test_a_zero_adapter_gives_the_plain_embedding_through_the_shared_trunk(tmp_path: Path, encoder: Encoder) -> None:
    write_adapter(
        tmp_path,
        _random_factors((3, 4, 5), 2, 2, zero_b=True),
        base_version=encoder.base_version,
        rank=2,
        alpha=4.0,
        date="2026-01-01",
    )
    adapted = Encoder(adapter=tmp_path, backend="torch")
    np.testing.assert_allclose(
        adapted.encode_heads(TEXTS), Encoder(adapter=False, backend="torch").encode(TEXTS), atol=1e-5
    )


def test_merged_weights_reproduce_the_lora_modules_of_training(tmp_path: Path, encoder: Encoder) -> None:
    config = FinetuneConfig(layers=2, rank=4, alpha=8.0, dropout=0.0)
    tokenizer, model = _load_model()
    wrapped = inject_lora(model, config)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for module in wrapped.values():
            module.lora_b.copy_(torch.randn(module.lora_b.shape, generator=generator) * 0.05)
    model.eval()
    encoded = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = _pooled(model, encoded["input_ids"], encoded["attention_mask"]).numpy()
    factors = {k: (m.lora_a.detach().numpy(), m.lora_b.detach().numpy()) for k, m in wrapped.items()}
    write_adapter(
        tmp_path, factors, base_version=encoder.base_version, rank=4, alpha=8.0, date="2026-01-01", dtype=np.float32
    )
    np.testing.assert_allclose(Encoder(adapter=tmp_path, backend="torch").encode_heads(TEXTS), expected, atol=1e-5)


def test_lexical_features_see_questions_and_requests() -> None:
    x = lexical_features(["What time is it?", "Could you send the file please.", "It is late."])
    assert x.shape == (3, len(FEATURES))
    named = [dict(zip(FEATURES, row.tolist(), strict=True)) for row in x]
    assert named[0]["ends_with_question_mark"] == 1.0
    assert named[0]["starts_with_wh"] == 1.0
    assert named[1]["starts_with_auxiliary"] == 1.0
    assert named[1]["polite_request"] == 1.0
    assert not any(named[2][f] for f in FEATURES)
    with pytest.raises(TypeError):
        lexical_features("one text")


def test_finetune_runs_end_to_end_on_a_tiny_subset(tmp_path: Path, encoder: Encoder, data_dir: Path) -> None:
    config = FinetuneConfig(limit=30, steps=4, checkpoint_every=2, layers=1, rank=2, batch_size=8, max_length=32)
    summary = finetune(data_dir, tmp_path / "work", config)
    assert summary["steps"] == 4
    assert (tmp_path / "work" / "checkpoint.pt").is_file()
    card = export(data_dir, tmp_path / "work", tmp_path / "adapter", tmp_path / "heads", limit=30, compare_frozen=False)
    adapted = Encoder(adapter=tmp_path / "adapter", backend="torch")
    topics = topic_accuracy(data_dir, adapted, draws=1, seed=0, limit=300)
    assert 0.0 < topics["base"] <= 1.0
    assert 0.0 < topics["adapted"] <= 1.0
    heads = Heads.load(tmp_path / "heads", encoder_version=adapted.model_version)
    assert heads.names == ("sentiment", "offensive", "hate", "emotion", "needs_answer")
    assert heads.lexical == ("needs_answer",)
    with pytest.raises(HeadsError):
        heads.check_encoder(encoder.base_version)  # heads of the adapted embedding refuse the plain one
    assert card["encoder"]["version"] == adapted.model_version
    assert card["training"]["steps"] == 4
    assert json.loads((tmp_path / "heads" / "card.json").read_text(encoding="utf-8"))["version"] == heads.version
    results = heads.predict(adapted.encode_heads(TEXTS), texts=TEXTS)
    assert set(results[0]) == set(heads.names)
    # Resuming a finished run is a no-op that keeps the checkpoint.
    assert finetune(data_dir, tmp_path / "work", config, resume=True)["steps"] == 4


def test_the_finetune_command_trains_the_heads_it_starts_from(tmp_path: Path, data_dir: Path) -> None:
    """The command in the card needs no folder of heads from elsewhere: stage 1 trains the frozen-encoder heads
    into the work folder (and a second run reuses them), the fine-tune starts from them, the card's baseline column
    comes from them, and the recorded command names no folder."""
    work, out = tmp_path / "work", tmp_path / "adapter"
    quick = ["--limit", "30", "--steps", "2", "--checkpoint-every", "1", "--layers", "1", "--rank", "2"]
    quick += ["--batch-size", "8", "--max-length", "32", "--topic-draws", "0", "--work", str(work), "--out", str(out)]
    assert finetune_main(quick, data_dir=data_dir) == 0
    frozen = Heads.load(work / "frozen-heads", encoder_version=Encoder.plain_version())
    stamp = (work / "frozen-heads" / "heads.npz").stat().st_mtime_ns
    card = json.loads((out / "heads" / "card.json").read_text(encoding="utf-8"))
    assert card["command"] == (
        "python -m classifiers.training.finetune --rank 2 --layers 1 --batch-size 8 --max-length 32 --steps 2 "
        "--limit 30"
    )
    assert card["training"]["config"]["init_heads"] == str(work / "frozen-heads")
    frozen_card = json.loads((work / "frozen-heads" / "card.json").read_text(encoding="utf-8"))
    for name in frozen.names:
        assert card["heads"][name]["baseline_val_score"] == frozen_card["heads"][name]["val_score"]
    assert Heads.load(out / "heads").encoder_version == Encoder(adapter=out, backend="torch").model_version
    assert finetune_main(quick, data_dir=data_dir) == 0
    assert (work / "frozen-heads" / "heads.npz").stat().st_mtime_ns == stamp  # reused, not trained again


def _lexical_heads(tmp_path: Path) -> Heads:
    rng = np.random.default_rng(0)
    dim = 8
    plain = (rng.normal(size=(2, dim)).astype(np.float32), np.zeros(2, np.float32))
    w = np.concatenate([np.zeros((2, dim), np.float32), np.zeros((2, len(FEATURES)), np.float32)], axis=1)
    w[0, dim + FEATURES.index("contains_question_mark")] = 10.0  # "?" -> needs_answer, whatever the embedding
    head = HeadWeights(
        name="needs_answer",
        labels=("needs_answer", "no_answer"),
        layers=(plain,),
        temperature=1.5,
        positive="needs_answer",
        lexical=LexicalVariant(features=FEATURES, w=w, b=np.asarray([0.0, 5.0], np.float32), temperature=2.0),
    )
    other = HeadWeights(name="hate", labels=("hate", "not-hate"), layers=(plain,), temperature=1.0)
    write_heads(tmp_path, [head, other], encoder_version="enc@1", date="2026-01-01")
    return Heads.load(tmp_path, encoder_version="enc@1")


def test_a_lexical_variant_round_trips_and_is_used_only_with_the_texts(tmp_path: Path) -> None:
    heads = _lexical_heads(tmp_path)
    assert heads.lexical == ("needs_answer",)
    variant = heads["needs_answer"].lexical
    assert variant is not None
    assert variant.temperature == 2.0
    assert heads["needs_answer"].temperature == 1.5
    x = np.zeros((2, 8), np.float32)
    texts = ["Is it open?", "It is open."]
    with_texts = heads.predict(x, texts=texts)
    assert [r["needs_answer"].label for r in with_texts] == ["needs_answer", "no_answer"]
    without = heads.probabilities(x)["needs_answer"]
    np.testing.assert_allclose(without, 0.5)  # zero embedding, zero bias: the plain head is undecided
    np.testing.assert_allclose(heads.probabilities(x, texts=texts)["hate"], heads.probabilities(x)["hate"])
    with pytest.raises(HeadsError, match="one per row"):
        heads.predict(x, texts=texts[:1])


def test_a_lexical_variant_with_other_features_is_refused() -> None:
    plain = (np.zeros((2, 4), np.float32), np.zeros(2, np.float32))
    with pytest.raises(HeadsError, match="lexical features"):
        HeadWeights(
            name="needs_answer",
            labels=("needs_answer", "no_answer"),
            layers=(plain,),
            temperature=1.0,
            lexical=LexicalVariant(
                features=("something_else",), w=np.zeros((2, 5), np.float32), b=np.zeros(2, np.float32), temperature=1
            ),
        )


def test_pipeline_with_heads_keeps_the_plain_embedding_and_feeds_the_heads_the_adapted_one(encoder: Encoder) -> None:
    heads = Heads.load(encoder_version=encoder.model_version)
    pipeline = Pipeline(encoder, heads=heads)
    analyses = pipeline.analyse(TEXTS)
    np.testing.assert_allclose(np.stack([a.embedding for a in analyses]), encoder.encode(TEXTS), atol=1e-5)
    expected = heads.predict(encoder.encode_heads(TEXTS), texts=TEXTS)
    for analysis, wanted in zip(analyses, expected, strict=True):
        assert analysis.heads is not None
        for name in heads.names:
            assert analysis.heads[name].label == wanted[name].label
            assert analysis.heads[name].scores == pytest.approx(wanted[name].scores, abs=1e-5)
