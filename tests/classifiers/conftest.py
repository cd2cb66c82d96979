"""Fixtures for the classifier tests.

The session-scoped ``encoder`` fixture (the real model, loaded once) comes from tests/conftest.py. ``data_dir`` is
the labelled data folder of the settings (``SWITCHBOARD_DATA_DIR``, else ``../shared/data``): the tests that read
it skip, saying why, when it (or a dataset they need) is missing, and fail instead when CI requires it
(``SWITCHBOARD_TEST_REQUIRE_SERVICES=1``), like the database tests.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from classifiers.encoder import Encoder
from classifiers.pipeline import Pipeline
from service.settings import Settings
from tests.conftest import unavailable


@pytest.fixture(scope="session")
def pipeline(encoder: Encoder) -> Pipeline:
    return Pipeline(encoder)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The labelled data folder (``Settings().data_dir``)."""
    folder = Settings().data_dir
    if not folder.is_dir():
        unavailable(f"the labelled data folder {folder}", "no such folder: set SWITCHBOARD_DATA_DIR to it")
    return folder


@pytest.fixture(scope="session")
def need_data(data_dir: Path) -> Callable[..., Path]:
    """``need_data("banking77", ...)``: the data folder, after checking that it holds those datasets."""

    def need(*datasets: str) -> Path:
        missing = [name for name in datasets if not (data_dir / name).is_dir()]
        if missing:
            unavailable(f"the datasets {', '.join(missing)} in {data_dir}", "not there: set SWITCHBOARD_DATA_DIR")
        return data_dir

    return need
