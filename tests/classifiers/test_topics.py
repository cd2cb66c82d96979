"""Few-shot topics: the organisation's own taxonomy, an explicit 'other', explanations."""

from __future__ import annotations

import numpy as np
import pytest

from classifiers.encoder import Encoder
from classifiers.topics import OTHER, TopicModel, TopicSpec, fingerprint

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
