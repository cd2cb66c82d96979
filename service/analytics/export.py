"""The export: one row per comment received in the window and its item, as CSV, a JSON array or JSON lines,
streamed in chunks read in short transactions of their own (a keyset over receipt time and id), so an export of a
year holds no connection, and on SQLite no lock, while the client reads it. Comment bodies only when asked for, and
then with personal data redacted (`classifiers.pii.redact`)."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from classifiers.pii import redact
from service.analytics.facts import Window, f, s, t
from service.analytics.schemas import ExportFormat
from service.analytics.scope import Scope, window
from service.database import SessionFactory, table, transaction
from service.models import Comment

CHUNK = 2000
c = table(Comment)
COLUMNS = (
    "comment_id", "source", "thread", "thread_title", "channel", "external_id", "received_at", "deleted_at",
    "item_id", "state", "resolution", "member", "team", "topic", "sentiment", "emotion", "pii", "needs_answer",
    "answered", "first_response_at", "first_response_seconds", "due_at", "within_sla", "escalated", "held",
    "approved", "rejected",
)  # fmt: skip
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json", "jsonl": "application/x-ndjson"}
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet would run such a cell as a formula


@dataclass(frozen=True, slots=True)
class Export:
    """A validated export, ready to stream."""

    media_type: str
    filename: str
    chunks: AsyncIterator[bytes]


def _columns(w: Window) -> list[sa.ColumnElement[Any]]:
    return [
        f.c.comment_id.label("comment_id"), s.c.slug.label("source"), t.c.external_id.label("thread"),
        t.c.title.label("thread_title"), t.c.channel.label("channel"), c.c.external_id.label("external_id"),
        c.c.deleted_at.label("deleted_at"), f.c.item_id.label("item_id"), f.c.resolution.label("resolution"),
        f.c.member_id.label("member"), f.c.team_id.label("team"), w.topic().label("topic"),
        w.sentiment().label("sentiment"), w.emotion().label("emotion"), w.pii().label("pii"),
        w.escalated().label("escalated"), w.held().label("held"), w.approved().label("approved"),
        w.rejected().label("rejected"), c.c.body.label("body"),
    ]  # fmt: skip


def _page(w: Window, last: tuple[datetime, uuid.UUID] | None) -> sa.Select[Any]:
    """The next CHUNK rows after `last` in (received_at, id) order."""

    def shape(select: sa.Select[Any]) -> sa.Select[Any]:
        if last is not None:
            after = sa.or_(f.c.received_at > last[0], sa.and_(f.c.received_at == last[0], f.c.comment_id > last[1]))
            select = select.where(after)
        return select.order_by(f.c.received_at, f.c.comment_id).limit(CHUNK)

    def comment(joined: sa.FromClause) -> sa.FromClause:
        return joined.join(c, c.c.id == f.c.comment_id)

    cte, per = w.base(_columns(w), shape=shape, places=True, joins=comment)
    decided = per.sla_decided()
    computed = ("needs", "answered", "frs", "sla_met", "waiting", "fr", "due", "state", "received")
    own = [column for column in cte.c if column.name not in computed]
    return sa.select(
        *own, per.received.label("received_at"), per.state.label("state"), per.needs.label("needs_answer"),
        per.answered().label("answered"), per.fr.label("first_response_at"),
        per.first_response().label("first_response_seconds"), per.due.label("due_at"),
        sa.case((decided == 1, per.sla_met()), else_=sa.null()).label("within_sla"),
    ).order_by(per.received, cte.c.comment_id)  # fmt: skip


_FLAGS = {"pii", "needs_answer", "answered", "within_sla", "escalated", "held", "approved", "rejected"}


def _record(row: sa.Row[Any], *, bodies: bool) -> dict[str, Any]:
    values = row._mapping
    record: dict[str, Any] = {}
    for name in COLUMNS:
        value = values[name]
        if name in _FLAGS:
            value = None if value is None else bool(value)
        elif isinstance(value, datetime):
            value = value.isoformat().replace("+00:00", "Z")
        elif isinstance(value, uuid.UUID):
            value = str(value)
        elif name == "first_response_seconds" and value is not None:
            value = round(float(value), 3)
        record[name] = value
    if bodies:
        record["body"] = redact(values["body"])
    return record


def _csv_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _encode(fmt: ExportFormat, records: list[dict[str, Any]], *, first: bool, header: list[str]) -> bytes:
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        if first:
            writer.writerow(header)
        for record in records:
            writer.writerow([_csv_cell("" if v is None else v) for v in record.values()])
        return out.getvalue().encode()
    lines = [json.dumps(record, ensure_ascii=False, separators=(",", ":")) for record in records]
    if fmt == "jsonl":
        return "".join(f"{line}\n" for line in lines).encode()
    return (("[\n" if first else ",\n") + ",\n".join(lines)).encode() if lines else b""


async def _chunks(factory: SessionFactory, w: Window, fmt: ExportFormat, *, bodies: bool) -> AsyncIterator[bytes]:
    header = [*COLUMNS, "body"] if bodies else list(COLUMNS)
    last: tuple[datetime, uuid.UUID] | None = None
    first = True
    while True:
        stmt = _page(w, last)
        async with transaction(factory) as session:
            rows = list(await session.execute(stmt))
        records = [_record(row, bodies=bodies) for row in rows]
        if records or first:
            chunk = _encode(fmt, records, first=first, header=header)
            if fmt == "json" and first and not records:
                chunk = b"["
            yield chunk
        first = False
        if len(rows) < CHUNK:
            break
        last = (rows[-1].received_at, rows[-1].comment_id)
    if fmt == "json":
        yield b"\n]\n"


async def export(
    factory: SessionFactory,
    *,
    scope: Scope,
    format: ExportFormat,
    since: datetime | None,
    until: datetime | None,
    include_bodies: bool,
    now: datetime,
) -> Export:
    """Validate the window now (errors before the first byte), and stream the rows when the caller reads."""
    async with factory() as session:
        w = window(session, scope=scope, since=since, until=until, now=now)
    stamp = f"{w.since:%Y%m%d}-{w.until:%Y%m%d}"
    return Export(
        media_type=MEDIA_TYPES[format],
        filename=f"switchboard-comments-{stamp}.{'json' if format == 'json' else format}",
        chunks=_chunks(factory, w, format, bodies=include_bodies),
    )
