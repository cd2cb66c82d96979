"""What every input must satisfy before a use case sees it, with one behaviour on SQLite and PostgreSQL.

- **JSON bodies** are parsed by `parse_json`, which turns every way a body can fail into one `InvalidJson`:
  bad syntax or UTF-8, nesting deeper than `MAX_JSON_DEPTH`, integers outside 64 bits (the widest column we
  have), non-finite numbers (`NaN`, `Infinity`, `1e999`), and NUL characters in any key or string.
- **Text** anywhere (body, query, path) must not contain NUL (U+0000): PostgreSQL cannot store it in text or
  JSON columns, and SQLite could, so it is refused on both, naming the field (`find_nul`).
- **Timestamps** in input models use `UtcDatetime`: an offset-less value means UTC, every value is normalised
  to UTC, and one that cannot be (`0001-01-01T00:00:00+14:00`) is a validation error, not a crash when stored.
- **PATCH bodies** change only the fields they set (`set_fields`); an explicit null clears an optional field and
  leaves a required one as it is.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Iterator, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel

MAX_JSON_DEPTH = 64
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

Loc = tuple[str | int, ...]


class InvalidJson(ValueError):
    """The body is not a JSON document Switchboard accepts; `loc` names where (empty: the whole body)."""

    def __init__(self, message: str, loc: Loc = (), kind: str = "json_invalid") -> None:
        super().__init__(message)
        self.message = message
        self.loc = loc
        self.kind = kind


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > 19:  # checked before int(): Python refuses to convert past 4,300 digits
        raise InvalidJson(f"The number {text[:30]}... is outside the 64-bit integer range.", kind="int_too_large")
    value = int(text)
    if not INT64_MIN <= value <= INT64_MAX:
        raise InvalidJson(f"The number {text} is outside the 64-bit integer range.", kind="int_too_large")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidJson(f"The number {text[:30]} is not a finite number.", kind="float_not_finite")
    return value


def _no_constant(name: str) -> Any:
    raise InvalidJson(f"{name} is not valid JSON.", kind="float_not_finite")


def parse_json(body: bytes) -> Any:
    """The document in `body`, or InvalidJson saying what is wrong with it and where."""
    try:
        document = json.loads(body, parse_int=_bounded_int, parse_float=_finite_float, parse_constant=_no_constant)
    except InvalidJson:
        raise
    except RecursionError:
        raise InvalidJson(f"The JSON document is nested deeper than {MAX_JSON_DEPTH} levels.") from None
    except UnicodeDecodeError as exc:
        raise InvalidJson(f"The body is not UTF-8: {exc.reason} at byte {exc.start}.") from None
    except json.JSONDecodeError as exc:
        raise InvalidJson(f"The body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).") from None
    except ValueError as exc:
        raise InvalidJson(f"The body is not valid JSON: {exc}.") from None
    if (loc := find_nul(document)) is not None:
        raise InvalidJson("Text must not contain NUL characters (U+0000).", loc=loc, kind="string_nul")
    return document


def _walk(document: Any) -> Iterator[tuple[Loc, Any]]:
    """Every key and value with its location, iteratively (no recursion); InvalidJson past MAX_JSON_DEPTH."""
    pending: list[tuple[Loc, Any]] = [((), document)]
    while pending:
        loc, value = pending.pop()
        if len(loc) > MAX_JSON_DEPTH:
            raise InvalidJson(f"The JSON document is nested deeper than {MAX_JSON_DEPTH} levels.", loc=loc[:8])
        yield loc, value
        if isinstance(value, dict):
            for key, item in value.items():
                yield (*loc, key), key
                pending.append(((*loc, key), item))
        elif isinstance(value, list):
            pending.extend(((*loc, index), item) for index, item in enumerate(value))


def find_nul(document: Any) -> Loc | None:
    """Where the first string (or object key) with a NUL character is, or None; InvalidJson if too deep."""
    for loc, value in _walk(document):
        if isinstance(value, str) and "\x00" in value:
            return loc
    return None


def to_utc(value: datetime) -> datetime:
    """`value` in UTC (naive means UTC); ValueError when that is outside the representable range."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range once converted to UTC") from None


UtcDatetime = Annotated[datetime, AfterValidator(to_utc)]
"""A timestamp in an input model: naive means UTC, always normalised to UTC, out-of-range values refused."""


def set_fields(
    data: BaseModel,
    *,
    clearable: Collection[str] = (),
    columns: Mapping[str, str] | None = None,
    exclude: Collection[str] = (),
) -> dict[str, Any]:
    """A PATCH body's changes (column -> value): only the fields it sets, and an explicit null clears a `clearable`
    field but leaves any other (a required one) as it is. `columns` renames fields; `exclude` leaves fields out."""
    columns = columns or {}
    return {
        columns.get(name, name): value
        for name in sorted(data.model_fields_set - set(exclude))
        if (value := getattr(data, name)) is not None or name in clearable
    }
