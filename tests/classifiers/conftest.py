"""Fixtures for the classifier tests.

The session-scoped ``encoder`` fixture (the real model, loaded once) comes from tests/conftest.py.
"""

from __future__ import annotations

import pytest

from classifiers.encoder import Encoder
from classifiers.pipeline import Pipeline


@pytest.fixture(scope="session")
def pipeline(encoder: Encoder) -> Pipeline:
    return Pipeline(encoder)
