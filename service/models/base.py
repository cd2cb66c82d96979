"""Column types and helpers shared by every table."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.engine import Dialect

# `sa.Integer` columns (every id and counter) are 32-bit on PostgreSQL (SQLite's are 64): what any input that is
# compared with or stored in one must stay within, or the driver refuses it with a server error.
INT_COLUMN_MIN, INT_COLUMN_MAX = -(2**31), 2**31 - 1


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (what every `_at` column stores)."""
    return datetime.now(UTC)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, on SQLite and PostgreSQL alike."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        value = value.astimezone(UTC)
        # SQLite has no time zones: store naive UTC so text comparisons order correctly.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:  # noqa: ARG002
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def ts_column(*, nullable: bool = False, index: bool = False, **kwargs: Any) -> sa.Column[datetime]:
    """A UTC timestamp column."""
    return sa.Column(UTCDateTime(), nullable=nullable, index=index, **kwargs)


Schema = TypeVar("Schema", bound=BaseModel)


def to_schema(schema: type[Schema], row: object, /, **computed: Any) -> Schema:
    """A row as an API schema: each field from the row's attribute of the same name, unless given in `computed`
    (fields the row names otherwise, or that are computed). Validated, so a str column becomes the field's enum."""
    values = {name: computed[name] if name in computed else getattr(row, name) for name in schema.model_fields}
    return schema.model_validate(values)
