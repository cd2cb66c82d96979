"""Inbound platform webhooks."""

from __future__ import annotations

import uuid
from typing import Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel

from routers.problems import problem_responses, rate_limited_response
from service import ingest
from service.deps import JobsDep, SessionDep, SettingsDep, limit_webhook_source
from service.errors import PayloadTooLarge

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


class Accepted(BaseModel):
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
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The body exceeds the limit of {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/{slug}",
    status_code=202,
    operation_id="receive_webhook",
    responses={
        200: {"model": Accepted, "description": "Seen before: nothing changed"},
        **problem_responses(401, 403, 404, 413, 422),
        429: rate_limited_response(),
    },
    dependencies=[Depends(limit_webhook_source)],  # first: before the body is read or verified
)
async def receive(
    slug: str, request: Request, response: Response, session: SessionDep, jobs: JobsDep, settings: SettingsDep
) -> Accepted:
    """Accept one signed comment event (created / updated / deleted); 202 once it is stored durably."""
    body = await read_body(request, settings.max_body_bytes)
    receipt = await ingest.receive(session, settings=settings, slug=slug, headers=request.headers, body=body)
    jobs.enqueue(receipt.job_ids)
    if receipt.duplicate:
        response.status_code = 200
    return Accepted(
        id=receipt.comment_id,
        status="duplicate" if receipt.duplicate else "accepted",
        outcome=receipt.outcome,
    )
