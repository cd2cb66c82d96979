"""Fixtures for the classifier tests.

``encoder`` is meant to live in tests/conftest.py (shared by the whole suite); it is defined here until it
does. Loading the real model takes a few seconds, so it happens once per session.
"""

from __future__ import annotations

import pytest

from classifiers.encoder import Encoder
from classifiers.pipeline import Pipeline


@pytest.fixture(scope="session")
def encoder() -> Encoder:
    return Encoder()


@pytest.fixture(scope="session")
def pipeline(encoder: Encoder) -> Pipeline:
    return Pipeline(encoder)
