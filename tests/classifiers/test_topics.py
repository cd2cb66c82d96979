"""Few-shot topics: the organisation's own taxonomy, an explicit 'other', explanations."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from classifiers.encoder import Encoder
from classifiers.topics import DEFAULT_CLASSIFIER_WEIGHT, OTHER, TopicModel, TopicSpec, fingerprint

TAXONOMY = [
    TopicSpec("pay", "Salaries, payslips, bonuses and expenses", (
        "When will the pay rise show on my payslip?", "My expenses claim has not been reimbursed",
        "Is there a bonus this year?")),
    TopicSpec("it", "Laptops, passwords, VPN, software and printers", (
        "The VPN keeps dropping when I work from home", "I am locked out of my account again",
        "Can we get a newer version of Excel?")),
    TopicSpec("canteen", "Food, the canteen and its opening hours", (
        "Will the canteen open earlier for the night shift?", "The vegetarian options are always sold out",
        "Can we have more healthy food at lunch?")),
]  # fmt: skip


@pytest.fixture(scope="module")
def model(encoder: Encoder) -> TopicModel:
    return TopicModel.fit(TAXONOMY, lambda texts: encoder.encode(texts))


@pytest.mark.parametrize(
    ("text", "topic"),
    [
        ("My payslip is missing the overtime from March", "pay"),
        ("My laptop will not connect to the VPN from home", "it"),
        ("Why is there no soup at lunch on Fridays?", "canteen"),
    ],
)
def test_comment_gets_the_topic_of_its_nearest_examples(
    model: TopicModel, encoder: Encoder, text: str, topic: str
) -> None:
    [result] = model.classify(encoder.encode([text]))
    assert result.label == topic
    assert result.nearest[0].topic == topic  # the explanation names what decided it
    assert set(result.scores) == {"pay", "it", "canteen"}


def test_comment_outside_the_taxonomy_is_other(model: TopicModel, encoder: Encoder) -> None:
    [result] = model.classify(encoder.encode(["Congratulations to the football team on winning the league!"]))
    assert result.label == OTHER
    assert result.score < model.other_threshold


def test_adding_an_example_changes_the_result_for_that_comment(encoder: Encoder) -> None:
    text = "Congratulations to the football team on winning the league!"
    extended = [*TAXONOMY, TopicSpec("sport", None, ("Well done to our five-a-side team",))]
    before = TopicModel.fit(TAXONOMY, encoder.encode).classify(encoder.encode([text]))[0]
    after = TopicModel.fit(extended, encoder.encode).classify(encoder.encode([text]))[0]
    assert (before.label, after.label) == (OTHER, "sport")
    assert fingerprint(TAXONOMY) != fingerprint(extended)


def test_empty_taxonomy_says_other() -> None:
    model = TopicModel.fit([], lambda texts: np.zeros((len(texts), 384), dtype=np.float32))
    [result] = model.classify(np.ones((1, 384), dtype=np.float32) / np.sqrt(384))
    assert result.label == OTHER


def test_other_is_reserved() -> None:
    with pytest.raises(ValueError, match="reserved"):
        TopicModel.fit([TopicSpec("Other")], lambda texts: np.zeros((len(texts), 384), dtype=np.float32))


def _corrected(topic: str, text: str) -> list[TopicSpec]:
    """The taxonomy after a responder filed ``text`` under ``topic`` (a correction becomes one more example)."""
    return [dataclasses.replace(t, examples=(*t.examples, text)) if t.name == topic else t for t in TAXONOMY]


@pytest.mark.parametrize(
    ("topic", "comment", "similar"),
    [
        ("it", "The printer ate my payslip", "The printer jammed and shredded my payslip"),
        (
            "canteen",
            "The coffee machine on the third floor is broken again",
            "The coffee machine in the kitchen is out of order",
        ),
    ],
)
def test_a_correction_moves_that_comment_and_similar_ones_to_the_corrected_topic(
    model: TopicModel, encoder: Encoder, topic: str, comment: str, similar: str
) -> None:
    queries = encoder.encode([comment, similar])
    before = model.classify(queries)
    after = TopicModel.fit(_corrected(topic, comment), encoder.encode).classify(queries)
    assert [r.label for r in before] != [topic, topic]
    assert [r.label for r in after] == [topic, topic]


def test_refitting_gives_identical_results(encoder: Encoder) -> None:
    queries = encoder.encode(["My payslip is missing the overtime from March", "The lift is broken", "More soup!"])
    first, second = (TopicModel.fit(TAXONOMY, encoder.encode).classify(queries) for _ in range(2))
    assert first == second


def test_without_the_classifier_a_topic_scores_its_nearest_examples_mean_similarity(encoder: Encoder) -> None:
    """classifier_weight=0 is the nearest-examples rule alone; one topic alone has nothing to be unsure between."""
    query = encoder.encode(["My laptop will not connect to the VPN from home"])
    vectors = encoder.encode(list(TopicModel.examples_of(TAXONOMY[1:2])[0]))
    expected = round(float(np.sort(vectors @ query[0])[::-1][:3].mean()), 4)
    [plain] = TopicModel.fit(TAXONOMY, encoder.encode, classifier_weight=0.0).classify(query)
    [alone] = TopicModel.fit(TAXONOMY[1:2], encoder.encode).classify(query)
    [blended] = TopicModel.fit(TAXONOMY, encoder.encode).classify(query)
    assert plain.scores["it"] == pytest.approx(expected, abs=1e-4)
    assert alone.scores == pytest.approx({"it": expected}, abs=1e-4)
    assert expected - 0.1 < blended.scores["it"] <= expected + 1e-4  # lowered by the classifier's doubt, a little


def test_a_threshold_of_minus_one_never_says_other(encoder: Encoder) -> None:
    texts = ["Congratulations to the football team on winning the league!", "asdf qwerty", "Bonus?"]
    results = TopicModel.fit(TAXONOMY, encoder.encode, other_threshold=-1.0).classify(encoder.encode(texts))
    assert OTHER not in {r.label for r in results}
    assert all(-1.0 <= s <= 1.0 for r in results for s in r.scores.values())


def test_the_explanation_shows_the_chosen_topics_closest_example() -> None:
    """Topic a has the three nearest examples, but b wins on its five nearest (k=5): b's closest is shown too."""
    cosines = {"a1": 0.9, "a2": 0.85, "a3": 0.8, "a4": 0.0, "a5": 0.0, "b1": 0.7, "b2": 0.7, "b3": 0.7, "b4": 0.7}
    cosines["b5"] = 0.69
    unit = {t: np.asarray([c, np.sqrt(1 - c * c), 0.0], dtype=np.float32) for t, c in cosines.items()}
    topics = [TopicSpec(name, None, tuple(t for t in cosines if t[0] == name)) for name in ("a", "b")]
    fitted = TopicModel.fit(topics, lambda texts: np.stack([unit[t] for t in texts]), k=5, classifier_weight=0.0)
    [result] = fitted.classify(np.asarray([[1.0, 0.0, 0.0]], dtype=np.float32))
    assert result.label == "b"
    assert [(n.text, n.similarity) for n in result.nearest] == [("a1", 0.9), ("a2", 0.85), ("b1", 0.7)]


def test_the_regression_beats_nearest_examples_on_banking77_with_8_examples_per_topic(
    encoder: Encoder, need_data: Callable[..., Path]
) -> None:
    """All 77 intents, the first 8 training texts of each as its examples, the next 3 to classify."""
    path = need_data("banking77") / "banking77" / "train.jsonl"
    by_label: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            by_label.setdefault(row["label"], []).append(row["text"])
    topics = [TopicSpec(label, None, tuple(texts[:8])) for label, texts in sorted(by_label.items())]
    gold = [label for label, texts in sorted(by_label.items()) for _ in texts[8:11]]
    queries = encoder.encode([text for _, texts in sorted(by_label.items()) for text in texts[8:11]])
    texts, _ = TopicModel.examples_of(topics)
    embedded = dict(zip(texts, encoder.encode(texts), strict=True))  # embedded once for both rules
    accuracy = {}
    for weight in (0.0, DEFAULT_CLASSIFIER_WEIGHT):
        fitted = TopicModel.fit(topics, lambda batch: np.stack([embedded[t] for t in batch]), classifier_weight=weight)
        accuracy[weight] = np.mean([r.label == g for r, g in zip(fitted.classify(queries), gold, strict=True)])
    assert accuracy[DEFAULT_CLASSIFIER_WEIGHT] >= accuracy[0.0] + 0.02, accuracy
