"""Path parameters shared by several routers, bounded to what their columns hold.

Out-of-range values answer 422 `validation_error` (and the OpenAPI document declares the bounds) instead of
reaching the database, which would fail on them (ids of 2^63 and more on SQLite, outside 32 bits on PostgreSQL).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

from service.models.base import INT_COLUMN_MAX

RowId = Annotated[int, Path(ge=1, le=INT_COLUMN_MAX, description="A positive integer, at most 2^31 - 1.")]
"""An integer id in a path: ids start at 1 and live in 32-bit columns."""
