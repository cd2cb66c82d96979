"""Opaque page cursors, one format for every paginated list: the last row's sort key, as base64url JSON.

Each list names the shape of its key as a pydantic `TypeAdapter` (e.g. `tuple[AwareDatetime, uuid.UUID]`), used
both ways, so that a cursor decodes to exactly the values that were encoded. Anything else — not base64, not
JSON, another shape, an integer outside its column — is `InvalidCursor` (422 `invalid_cursor`) on every list.
"""

from __future__ import annotations

import base64
from typing import Annotated, TypeVar

from pydantic import Field, TypeAdapter

from service.errors import InvalidCursor
from service.models.base import INT_COLUMN_MAX, INT_COLUMN_MIN

T = TypeVar("T")

ColumnInt = Annotated[int, Field(ge=INT_COLUMN_MIN, le=INT_COLUMN_MAX)]
"""An integer key part: what an `sa.Integer` column can be compared with on both databases."""


def encode_cursor(shape: TypeAdapter[T], key: T) -> str:
    """The cursor that resumes a list after the row whose sort key is `key`."""
    return base64.urlsafe_b64encode(shape.dump_json(key)).decode().rstrip("=")


def decode_cursor(shape: TypeAdapter[T], cursor: str) -> T:
    """The sort key in `cursor`; InvalidCursor if this API could not have returned it."""
    try:
        return shape.validate_json(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)), strict=True)
    except ValueError:  # binascii.Error, non-ASCII text and pydantic's ValidationError are all ValueErrors
        raise InvalidCursor("The cursor is not one this API returned.") from None
