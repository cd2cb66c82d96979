"""The classification document: thresholds decide binary heads; what leaves the database is redacted."""

from __future__ import annotations

import numpy as np

from classifiers.heads import HeadResult
from classifiers.pii import PiiFinding
from classifiers.pipeline import Analysis
from classifiers.topics import Neighbour, TopicResult
from service.classification.classifier import document, thresholds_for
from service.settings import Settings


def analysis(offensive: float) -> Analysis:
    return Analysis(
        embedding=np.zeros(384, dtype=np.float32),
        pii=[PiiFinding("email", 0, 5)],
        model_version="test",
        heads={
            "offensive": HeadResult("offensive" if offensive >= 0.5 else "not-offensive",
                                    {"offensive": offensive, "not-offensive": 1 - offensive}),
            "sentiment": HeadResult("neutral", {"negative": 0.2, "neutral": 0.5, "positive": 0.3}),
        },
        topic=TopicResult("pay", 0.6, {"pay": 0.6}, [Neighbour("mail jo@example.com about pay", "pay", 0.6)]),
    )  # fmt: skip


def test_source_threshold_overrides_the_setting() -> None:
    settings = Settings(offensive_threshold=0.5)
    assert thresholds_for(settings, {"offensive": 0.9})["offensive"] == 0.9
    assert thresholds_for(settings, None)["offensive"] == 0.5
    strict = document(analysis(0.7), thresholds_for(settings, {"offensive": 0.9}))
    default = document(analysis(0.7), thresholds_for(settings, None))
    assert (strict["offensive"]["label"], default["offensive"]["label"]) == ("not-offensive", "offensive")
    assert strict["sentiment"]["label"] == "neutral"  # multi-class heads are not thresholded


def test_heads_missing_from_the_pipeline_are_null() -> None:
    doc = document(analysis(0.1))
    assert doc["hate"] is None
    assert doc["needs_answer"] is None


def test_nearest_examples_are_redacted() -> None:
    doc = document(analysis(0.1))
    assert doc["topic"]["nearest"][0]["text"] == "mail [EMAIL] about pay"
