"""Webhook ingestion: signed, durable, idempotent; every bad input refused with nothing written."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import col

from classifiers.pipeline import BatchingAnalyser
from service.database import create_engine
from service.models import Comment, CommentVersion, Delivery, Job
from service.signing import sign
from tests.conftest import drain
from tests.factories import ADMIN, comment_payload, create_source, encode, post_event, signed_headers


async def count_rows(client: httpx.AsyncClient, *models: Any) -> dict[str, int]:
    """Row counts read through a separate connection (what is really committed)."""
    engine = create_engine(client.app.state.settings.database_url)  # type: ignore[attr-defined]
    counts = {}
    async with engine.connect() as connection:
        for model in models:
            counts[model.__tablename__] = (
                await connection.execute(sa.select(sa.func.count()).select_from(model))
            ).scalar_one()
    await engine.dispose()
    return counts


async def test_signed_comment_is_acknowledged_durably_and_processed(client: httpx.AsyncClient) -> None:
    secret = await create_source(client)
    response = await post_event(client, secret, comment_payload(body="Email me at jane.doe@example.com please?"))
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "accepted"
    comment_id = response.json()["id"]
    # Ack means durable: another connection sees the comment and its job row as soon as we have the 202.
    counts = await count_rows(client, Comment, Job, Delivery)
    assert counts == {"comment": 1, "job": 1, "delivery": 1}

    await drain(client)
    shown = (await client.get(f"/v1/comments/{comment_id}", headers=ADMIN)).json()
    assert shown["processing"]["state"] == "processed"
    assert shown["processing"]["attempts"] == 1
    assert shown["analysis"]["embedding_dim"] == 384
    assert shown["analysis"]["pii"] == [{"kind": "email", "start": 12, "end": 32}]
    assert shown["thread"]["title"] == "New canteen opening hours"
    assert shown["author_department"] == "Finance"


async def test_redelivered_webhook_changes_nothing(client: httpx.AsyncClient) -> None:
    secret = await create_source(client)
    first = await post_event(client, secret, comment_payload(), webhook_id="msg_same")
    again = await post_event(client, secret, comment_payload(body="a different body"), webhook_id="msg_same")
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json() == {"id": first.json()["id"], "status": "duplicate", "outcome": "created"}
    assert await count_rows(client, Comment, Job, Delivery, CommentVersion) == {
        "comment": 1,
        "job": 1,
        "delivery": 1,
        "comment_version": 1,
    }


async def test_same_comment_created_twice_is_one_comment(client: httpx.AsyncClient) -> None:
    secret = await create_source(client)
    first = await post_event(client, secret, comment_payload("c-7"))
    second = await post_event(client, secret, comment_payload("c-7"))
    assert second.status_code == 202
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["outcome"] == "duplicate_comment"
    assert await count_rows(client, Comment, Job) == {"comment": 1, "job": 1}


async def test_edit_keeps_history_and_is_processed_again(client: httpx.AsyncClient) -> None:
    secret = await create_source(client)
    created = await post_event(client, secret, comment_payload("c-8", body="first words"))
    await drain(client)
    edited = await post_event(
        client,
        secret,
        comment_payload(
            "c-8",
            event="comment.updated",
            body="second words, call +44 20 7946 0958",
            updated_at="2026-11-21T11:00:00Z",
        ),
    )
    assert edited.json()["outcome"] == "updated"
    await drain(client)
    shown = (await client.get(f"/v1/comments/{created.json()['id']}", headers=ADMIN)).json()
    assert shown["body"] == "second words, call +44 20 7946 0958"
    assert (shown["version"], shown["versions"]) == (2, 2)
    assert shown["analysis"]["comment_version"] == 2
    assert [p["kind"] for p in shown["analysis"]["pii"]] == ["phone"]
    assert await count_rows(client, Job) == {"job": 2}


async def test_stale_edit_arriving_late_is_ignored(client: httpx.AsyncClient) -> None:
    secret = await create_source(client)
    await post_event(
        client,
        secret,
        comment_payload("c-9", event="comment.updated", body="newest", updated_at="2026-11-21T12:00:00Z"),
    )
    late = await post_event(
        client, secret, comment_payload("c-9", event="comment.updated", body="older", updated_at="2026-11-21T11:00:00Z")
    )
    assert late.json()["outcome"] == "ignored_stale"
    shown = (await client.get(f"/v1/comments/{late.json()['id']}", headers=ADMIN)).json()
    assert shown["body"] == "newest"


async def test_deleted_comment_is_erased_but_its_deletion_is_kept(client: httpx.AsyncClient) -> None:
    secret = await create_source(client)
    created = await post_event(client, secret, comment_payload("c-10", body="my card is 4111 1111 1111 1111"))
    await drain(client)
    deleted = await post_event(client, secret, comment_payload("c-10", event="comment.deleted"))
    assert deleted.status_code == 202
    assert deleted.json()["outcome"] == "deleted"
    shown = (await client.get(f"/v1/comments/{created.json()['id']}", headers=ADMIN)).json()
    assert shown["body"] == ""
    assert shown["author_name"] is None
    assert shown["author_id"] is None
    assert shown["deleted_at"] is not None
    assert shown["analysis"] is None
    assert shown["processing"]["state"] == "deleted"
    engine = create_engine(client.app.state.settings.database_url)  # type: ignore[attr-defined]
    async with engine.connect() as connection:
        bodies = (await connection.execute(sa.select(col(CommentVersion.body)))).scalars().all()
    await engine.dispose()
    assert bodies == [""]
    # A late 'created' for a deleted comment does not bring it back.
    late = await post_event(client, secret, comment_payload("c-10"))
    assert late.json()["outcome"] == "ignored_deleted"


async def test_delete_before_create_leaves_a_tombstone(client: httpx.AsyncClient) -> None:
    secret = await create_source(client)
    deleted = await post_event(client, secret, comment_payload("c-11", event="comment.deleted"))
    created = await post_event(client, secret, comment_payload("c-11"))
    assert created.json()["id"] == deleted.json()["id"]
    assert created.json()["outcome"] == "ignored_deleted"
    assert await count_rows(client, Job) == {"job": 0}


async def test_deleting_cancels_pending_work(client: httpx.AsyncClient) -> None:
    secret = await create_source(client)
    queue = client.app.state.services.backend  # type: ignore[attr-defined]
    await queue.close()  # nothing runs: the job stays pending
    created = await post_event(client, secret, comment_payload("c-12"))
    await post_event(client, secret, comment_payload("c-12", event="comment.deleted"))
    jobs = (await client.get("/v1/admin/jobs", headers=ADMIN)).json()["items"]
    assert [j["state"] for j in jobs] == ["cancelled"]
    assert jobs[0]["comment_id"] == created.json()["id"]


async def test_reply_is_a_comment_with_its_parent(client: httpx.AsyncClient) -> None:
    secret = await create_source(client)
    await post_event(client, secret, comment_payload("c-1"))
    reply = await post_event(client, secret, comment_payload("c-2", parent_id="c-1", body="Yes, from January."))
    shown = (await client.get(f"/v1/comments/{reply.json()['id']}", headers=ADMIN)).json()
    assert shown["parent_id"] == "c-1"
    assert shown["thread"]["id"] == "story-42"


# ---- refusals: every bad delivery gets a problem and writes nothing ---------------------------------------


def _tamper(case: str, secret: str, body: bytes) -> tuple[dict[str, str], bytes]:
    now = int(time.time())
    headers = signed_headers(secret, body, webhook_id="msg_x", timestamp=now)
    if case.startswith("missing "):
        del headers[case.removeprefix("missing ")]
    elif case == "non-numeric timestamp":
        headers["webhook-timestamp"] = "yesterday"
    elif case == "stale timestamp":
        headers = signed_headers(secret, body, webhook_id="msg_x", timestamp=now - 301)
    elif case == "future timestamp":
        headers = signed_headers(secret, body, webhook_id="msg_x", timestamp=now + 301)
    elif case == "wrong secret":
        other = "whsec_" + base64.b64encode(b"x" * 32).decode()
        headers = signed_headers(other, body, webhook_id="msg_x", timestamp=now)
    elif case == "one byte changed":
        body = body.replace(b"canteen", b"cantee!")
    elif case == "re-serialised json":
        body = json.dumps(json.loads(body), indent=2).encode()
    elif case == "unknown version prefix":
        headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v2,")
    elif case == "signature for another id":
        headers["webhook-id"] = "msg_y"
    elif case == "garbage signature":
        headers["webhook-signature"] = "v1,not base64!!"
    return headers, body


REJECTIONS = [
    "missing webhook-id",
    "missing webhook-timestamp",
    "missing webhook-signature",
    "non-numeric timestamp",
    "stale timestamp",
    "future timestamp",
    "wrong secret",
    "one byte changed",
    "re-serialised json",
    "unknown version prefix",
    "signature for another id",
    "garbage signature",
]


@pytest.mark.parametrize("case", REJECTIONS)
async def test_unverifiable_delivery_is_refused_and_writes_nothing(client: httpx.AsyncClient, case: str) -> None:
    secret = await create_source(client)
    headers, body = _tamper(case, secret, encode(comment_payload()))
    response = await client.post("/v1/webhooks/intranet", content=body, headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "invalid_signature"
    assert await count_rows(client, Comment, Job, Delivery) == {"comment": 0, "job": 0, "delivery": 0}


async def test_one_of_several_signatures_is_enough(client: httpx.AsyncClient) -> None:
    secret = await create_source(client)
    body = encode(comment_payload())
    headers = signed_headers(secret, body)
    headers["webhook-signature"] = "v1,AAAA v1a,ed25519sig " + headers["webhook-signature"]
    response = await client.post("/v1/webhooks/intranet", content=body, headers=headers)
    assert response.status_code == 202, response.text


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        ({**comment_payload(), "extra": 1}, ["extra"]),
        ({"type": "comment.exploded", "data": {}}, ["type"]),
        ({"type": "comment.created", "data": {**comment_payload()["data"], "likes": 3}}, ["data", "likes"]),
        (
            {"type": "comment.created", "data": {**comment_payload()["data"], "created_at": "2026-11-21T10:00:00"}},
            ["data", "created_at"],
        ),
    ],
)
async def test_invalid_event_is_422_with_field_errors_and_writes_nothing(
    client: httpx.AsyncClient, payload: dict[str, Any], where: list[str]
) -> None:
    secret = await create_source(client)
    response = await post_event(client, secret, payload)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "invalid_payload"
    assert any(where[-1] in [str(p) for p in e["loc"]] for e in problem["errors"]), problem
    assert await count_rows(client, Comment, Job, Delivery) == {"comment": 0, "job": 0, "delivery": 0}


async def test_body_that_is_not_json_is_422(client: httpx.AsyncClient) -> None:
    secret = await create_source(client)
    body = b"\xff\xfenot json"
    response = await client.post("/v1/webhooks/intranet", content=body, headers=signed_headers(secret, body))
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_payload"


async def test_body_over_the_cap_is_413_and_writes_nothing(client: httpx.AsyncClient) -> None:
    secret = await create_source(client)
    body = encode(comment_payload(body="x" * 70_000))
    response = await client.post("/v1/webhooks/intranet", content=body, headers=signed_headers(secret, body))
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"

    async def chunked() -> Any:  # no Content-Length: the cap is enforced while reading
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    response = await client.post("/v1/webhooks/intranet", content=chunked(), headers=signed_headers(secret, body))
    assert response.status_code == 413
    assert await count_rows(client, Comment, Delivery) == {"comment": 0, "delivery": 0}


async def test_unknown_source_is_404(client: httpx.AsyncClient) -> None:
    body = encode(comment_payload())
    response = await client.post("/v1/webhooks/nowhere", content=body, headers=signed_headers("whsec_AAAA", body))
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


async def test_inactive_source_is_refused_after_verification(client: httpx.AsyncClient) -> None:
    secret = await create_source(client)
    await client.patch("/v1/admin/sources/intranet", json={"active": False}, headers=ADMIN)
    response = await post_event(client, secret, comment_payload())
    assert response.status_code == 403
    assert await count_rows(client, Comment) == {"comment": 0}


def test_standard_webhooks_published_test_vector_verifies() -> None:
    # The vector from the Standard Webhooks reference libraries' test suites.
    from datetime import UTC, datetime

    from service.connectors.standard import verify

    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    now = datetime.fromtimestamp(1614265330, UTC)
    assert verify(body=body, headers=headers, secrets=[secret], tolerance_seconds=300, now=now) == headers["webhook-id"]
    assert (
        sign(secret, webhook_id=headers["webhook-id"], timestamp=1614265330, body=body) == headers["webhook-signature"]
    )


def test_signatures_match_the_standardwebhooks_package() -> None:
    from datetime import UTC, datetime

    from standardwebhooks.webhooks import Webhook

    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    body = b'{"type": "comment.created"}'
    theirs = Webhook(secret).sign("msg_1", datetime.fromtimestamp(1700000000, UTC), body.decode())
    assert sign(secret, webhook_id="msg_1", timestamp=1700000000, body=body) == theirs


async def test_acknowledged_comment_survives_a_restart_before_processing(
    database_url: str, analyser: BatchingAnalyser
) -> None:
    from tests.conftest import make_settings, running_app

    settings = make_settings(database_url, job_requeue_seconds=3600)
    async with running_app(settings, analyser) as first:
        await first.app.state.services.backend.close()  # type: ignore[attr-defined]  # the process dies before processing
        secret = await create_source(first)
        accepted = await post_event(first, secret, comment_payload())
        assert accepted.status_code == 202
    async with running_app(settings, analyser) as second:
        for _ in range(100):
            shown = (await second.get(f"/v1/comments/{accepted.json()['id']}", headers=ADMIN)).json()
            if shown["processing"]["state"] == "processed":
                break
            await asyncio.sleep(0.1)
        assert shown["processing"]["state"] == "processed"
