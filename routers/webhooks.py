"""Inbound platform webhooks."""

from __future__ import annotations

import uuid
from typing import Literal

from fastapi import Depends, Request, Response
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from routers.deps import ClockDep, JobsDep, SessionDep, SettingsDep, limit_webhook_source
from routers.edge import api_router
from routers.problems import problem_responses, rate_limited_response
from service.connectors.standard import MAX_TIMESTAMP_DIGITS, MAX_WEBHOOK_ID_LENGTH, event_json_schema
from service.errors import ClientClosedRequest, PayloadTooLarge
from service.ingest import events as ingest

router = api_router(prefix="/v1/webhooks", tags=["webhooks"])


class ReceiptPublic(BaseModel):
    """The event is stored durably; processing happens in the background."""

    id: uuid.UUID | None
    status: Literal["accepted", "duplicate"]
    outcome: str


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing more than `limit` bytes without reading them all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The body is {declared} bytes; the limit is {limit}.")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"The body exceeds the limit of {limit} bytes.")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientClosedRequest("The sender closed the connection before the body arrived.") from None
    return b"".join(chunks)


_EVENT_SCHEMA, _EVENT_DEFINITIONS = event_json_schema("#/components/schemas/{model}")
_SIGNATURE_HEADERS = [
    {
        "name": "webhook-id",
        "in": "header",
        "required": True,
        "description": "The delivery's id, the same on every retry (de-duplicated for 30 days).",
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_WEBHOOK_ID_LENGTH},
    },
    {
        "name": "webhook-timestamp",
        "in": "header",
        "required": True,
        "description": "Integer seconds since the epoch; refused outside the tolerance (300 s by default).",
        "schema": {"type": "string", "pattern": f"^[0-9]{{1,{MAX_TIMESTAMP_DIGITS}}}$"},
    },
    {
        "name": "webhook-signature",
        "in": "header",
        "required": True,
        "description": "Space-separated `v1,<base64 HMAC-SHA256 of id.timestamp.body>` with the source's secret.",
        "schema": {"type": "string", "minLength": 1},
    },
]


@router.post(
    "/{slug}",
    status_code=202,
    operation_id="receive_webhook",
    responses={
        200: {"model": ReceiptPublic, "description": "Seen before: nothing changed"},
        **problem_responses(401, 403, 404, 413, 422),
        429: rate_limited_response(),
    },
    dependencies=[Depends(limit_webhook_source)],  # first: before the body is read or verified
    openapi_extra={  # documented, not declared: the body is read raw and verified before it is parsed
        "parameters": _SIGNATURE_HEADERS,
        "requestBody": {"required": True, "content": {"application/json": {"schema": _EVENT_SCHEMA}}},
        "x-component-schemas": _EVENT_DEFINITIONS,
    },
)
async def receive(
    slug: str,
    request: Request,
    response: Response,
    session: SessionDep,
    jobs: JobsDep,
    settings: SettingsDep,
    now: ClockDep,
) -> ReceiptPublic:
    """Accept one signed comment event (created / updated / deleted); 202 once it is stored durably.

    Signed with Standard Webhooks: a missing or malformed `webhook-*` header, a timestamp outside the
    tolerance or a signature that matches no secret of the source is 401 `invalid_signature`, with nothing
    written. A verified body that is not a valid event (bad JSON, nesting deeper than 64, numbers outside 64
    bits, NUL characters, unknown fields, times out of range) is 422 `invalid_payload` naming the field.
    """
    body = await read_body(request, settings.max_body_bytes)
    receipt = await ingest.receive(session, settings=settings, slug=slug, headers=request.headers, body=body, now=now)
    jobs.enqueue(receipt.job_ids)
    if receipt.duplicate:
        response.status_code = 200
    return ReceiptPublic(
        id=receipt.comment_id,
        status="duplicate" if receipt.duplicate else "accepted",
        outcome=receipt.outcome,
    )
