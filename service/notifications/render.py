"""One batch of notifications as the message its channel takes: an e-mail, a Slack message, a Teams Adaptive Card,
or a signed webhook's JSON body.

Each entry says what happened, where (the thread's title and channel), a short excerpt of the comment with the
personal data the detectors find replaced by placeholders, why it was routed there, the deadline, and a link to
the item. A batch lists its first `MAX_ENTRIES` entries and says how many more there are.
"""

from __future__ import annotations

import html
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from classifiers.pii import PiiFinding, PiiKind, redact
from service.notifications.tables import NotificationEvent
from service.outbound.tables import ChannelKind

MAX_ENTRIES: Final = 20
EXCERPT_CHARS: Final = 200
TITLE_CHARS: Final = 150
REASON_CHARS: Final = 300

HEADLINES: Final = {
    NotificationEvent.item_assigned: "New item",
    NotificationEvent.item_sla_reminder: "Deadline soon",
    NotificationEvent.item_escalated: "Escalated: deadline passed",
    NotificationEvent.item_reopened: "Reopened",
    NotificationEvent.comment_held: "Held for moderation",
    NotificationEvent.comment_approved: "Approved into the queue",
}
_PII_KINDS: Final[frozenset[str]] = frozenset({"email", "phone", "card", "iban"})


@dataclass(frozen=True, slots=True)
class Entry:
    """One notification as shown: every text in it is already free of detected personal data."""

    event: NotificationEvent
    item_id: uuid.UUID
    title: str
    channel: str | None
    excerpt: str
    reason: str
    priority: str
    due_at: datetime | None
    url: str

    @property
    def headline(self) -> str:
        """What happened, in words."""
        return HEADLINES[self.event]


def clean(text: str, limit: int) -> str:
    """`text` with personal data replaced and cut to `limit` characters (redacted first: a cut must not leave half
    an address behind), on one line."""
    flat = " ".join(redact(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def excerpt(body: str, spans: Sequence[dict[str, Any]] = ()) -> str:
    """A comment's excerpt: the spans processing found (with the deployment's phone region) replaced, then
    whatever the detectors still find, cut to EXCERPT_CHARS."""
    findings: list[PiiFinding] = []
    for span in spans:
        kind, start, end = span.get("kind"), span.get("start"), span.get("end")
        if kind in _PII_KINDS and isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(body):
            findings.append(PiiFinding(_kind(kind), start, end))
    findings.sort(key=lambda f: f.start)
    disjoint = [f for i, f in enumerate(findings) if i == 0 or f.start >= findings[i - 1].end]
    return clean(redact(body, disjoint) if disjoint else body, EXCERPT_CHARS)


def _kind(kind: object) -> PiiKind:
    assert kind in _PII_KINDS
    return kind  # type: ignore[return-value]  # checked against the four kinds just above


def _due(entry: Entry) -> str:
    return entry.due_at.strftime("%Y-%m-%d %H:%M UTC") if entry.due_at else "no deadline"


def _where(entry: Entry) -> str:
    return f"{entry.title} ({entry.channel})" if entry.channel else entry.title


def subject(entries: Sequence[Entry]) -> str:
    """A one-line summary of the batch."""
    if len(entries) == 1:
        return f"[Switchboard] {entries[0].headline}: {entries[0].title}"[:200]
    return f"[Switchboard] {len(entries)} notifications"


def _more(entries: Sequence[Entry]) -> int:
    return max(0, len(entries) - MAX_ENTRIES)


# ---- e-mail ---------------------------------------------------------------------------------------------------


def email(entries: Sequence[Entry], *, to: str) -> dict[str, Any]:
    """The outbox payload of an e-mail: recipients, subject, plain text and HTML."""
    shown, more = entries[:MAX_ENTRIES], _more(entries)
    lines: list[str] = []
    for e in shown:
        lines += [
            f"{e.headline}: {_where(e)}",
            f'  "{e.excerpt}"',
            f"  Routed: {e.reason}",
            f"  Priority: {e.priority}; due: {_due(e)}",
            f"  {e.url}",
            "",
        ]
    if more:
        lines.append(f"... and {more} more.")
    blocks = [
        f"<li><p><strong>{html.escape(e.headline)}</strong>: {html.escape(_where(e))}</p>"
        f"<blockquote>{html.escape(e.excerpt)}</blockquote>"
        f"<p>Routed: {html.escape(e.reason)}<br>Priority: {html.escape(e.priority)}; due: {html.escape(_due(e))}</p>"
        f'<p><a href="{html.escape(e.url, quote=True)}">Open the item</a></p></li>'
        for e in shown
    ]
    tail = f"<p>... and {more} more.</p>" if more else ""
    return {
        "to": [to],
        "subject": subject(entries),
        "text": "\n".join(lines).rstrip() + "\n",
        "html": f"<html><body><ul>{''.join(blocks)}</ul>{tail}</body></html>",
    }


# ---- Slack ----------------------------------------------------------------------------------------------------


def slack_escape(text: str) -> str:
    """Slack's three control characters in user text (https://api.slack.com/reference/surfaces/formatting)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack(entries: Sequence[Entry]) -> dict[str, Any]:
    """An incoming-webhook message: a plain `text` fallback (notifications, screen readers) and blocks."""
    shown, more = entries[:MAX_ENTRIES], _more(entries)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": subject(entries)[:150], "emoji": False}}
    ]
    for e in shown:
        title = slack_escape(_where(e))
        body = (
            f"*{slack_escape(e.headline)}*: <{e.url}|{title}>\n>{slack_escape(e.excerpt)}\n"
            f"Routed: {slack_escape(e.reason)}\nPriority: {e.priority} · due: {_due(e)}"
        )
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": body[:3000]}})
    if more:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"... and {more} more."}]})
    fallback = "; ".join(f"{e.headline}: {_where(e)}" for e in shown[:5])
    if len(entries) > 5:
        fallback += f" (and {len(entries) - 5} more)"
    return {"text": slack_escape(f"{subject(entries)} - {fallback}")[:3000], "blocks": blocks}


# ---- Microsoft Teams ------------------------------------------------------------------------------------------


def teams(entries: Sequence[Entry], *, base_url: str) -> dict[str, Any]:
    """A message with an Adaptive Card, as a Teams Workflows webhook ("When a Teams webhook request is received")
    takes it."""
    shown, more = entries[:MAX_ENTRIES], _more(entries)
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": subject(entries), "weight": "Bolder", "size": "Medium", "wrap": True}
    ]
    for e in shown:
        body.append({
            "type": "Container",
            "separator": True,
            "selectAction": {"type": "Action.OpenUrl", "url": e.url, "title": "Open"},
            "items": [
                {"type": "TextBlock", "text": f"{e.headline}: {_where(e)}", "weight": "Bolder", "wrap": True},
                {"type": "TextBlock", "text": e.excerpt, "wrap": True, "isSubtle": True},
                {"type": "FactSet", "facts": [
                    {"title": "Routed", "value": e.reason},
                    {"title": "Priority", "value": e.priority},
                    {"title": "Due", "value": _due(e)},
                ]},
            ],
        })  # fmt: skip
    if more:
        body.append({"type": "TextBlock", "text": f"... and {more} more.", "wrap": True, "isSubtle": True})
    if len(entries) == 1:
        action = {"type": "Action.OpenUrl", "title": "Open the item", "url": entries[0].url}
    else:
        action = {"type": "Action.OpenUrl", "title": "Open the queue", "url": f"{base_url}/v1/queue"}
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
        "actions": [action],
    }
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }


# ---- signed webhook -------------------------------------------------------------------------------------------


def webhook(entries: Sequence[Entry], *, recipient: str, now: datetime) -> dict[str, Any]:
    """A Standard Webhooks event body: `type`, `timestamp` and `data` with the events."""
    shown = entries[:MAX_ENTRIES]
    events = [
        {
            "event": e.event.value,
            "item_id": str(e.item_id),
            "title": e.title,
            "channel": e.channel,
            "excerpt": e.excerpt,
            "reason": e.reason,
            "priority": e.priority,
            "due_at": e.due_at.isoformat() if e.due_at else None,
            "url": e.url,
        }
        for e in shown
    ]
    return {
        "type": "notification",
        "timestamp": now.isoformat(),
        "data": {"recipient": recipient, "events": events, "more": _more(entries)},
    }


def payload(
    kind: ChannelKind, entries: Sequence[Entry], *, to: str | None, recipient: str, base_url: str, now: datetime
) -> dict[str, Any]:
    """The outbox payload for a channel of `kind`."""
    if kind == ChannelKind.email:
        assert to is not None
        return email(entries, to=to)
    if kind == ChannelKind.slack:
        return slack(entries)
    if kind == ChannelKind.teams:
        return teams(entries, base_url=base_url)
    return webhook(entries, recipient=recipient, now=now)
