"""The operators' view: `/metrics` counts what really happened and is served only with its token; log lines are
JSON carrying the request id from the request into the job that processed its comment, and no personal data."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from classifiers.pipeline import BatchingAnalyser
from service import logs
from service.queue import sla
from tests.clock import FakeClock
from tests.conftest import drain, make_settings, running_app
from tests.factories import ADMIN, comment_payload, create_source, post_event, put_rules, signed_headers
from tests.receiver import Receiver

# service/outbound/delivery.py (claim) calls Result.tuples(), deprecated in SQLAlchemy 2.1 (as in test_outbound_e2e).
pytestmark = pytest.mark.filterwarnings("ignore:The Result.tuples\\(\\) method is deprecated")

TOKEN = "metrics-token-0123456789abcdef"
SCRAPER = {"Authorization": f"Bearer {TOKEN}"}
WEBHOOK_ROUTE = "/v1/webhooks/{slug}"
RULES = [
    {"id": "hold-sales", "name": "Hold sales talk", "when": {"field": "text", "op": "contains", "value": "cheap"},
     "then": {"hold": True}},
    {"id": "answer-in-an-hour", "name": "Answer within the hour", "then": {"sla": "PT1H"}},
]  # fmt: skip

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """The platform's callback endpoint (answers 200)."""
    with Receiver() as running:
        yield running


@pytest.fixture
async def api(database_url: str, analyser: BatchingAnalyser, clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    """The app with a metrics token, on a fresh database (SQLite and PostgreSQL)."""
    async with running_app(make_settings(database_url, metrics_token=TOKEN), analyser, clock=clock) as client:
        yield client


async def scrape(api: httpx.AsyncClient) -> Samples:
    """Every sample of /metrics, parsed by prometheus-client's own parser."""
    response = await api.get("/metrics", headers=SCRAPER)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def grew(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much a counter (or a histogram's _count) moved between two scrapes (the process keeps counting across
    tests, so a test reads differences)."""
    return value(after, name, **labels) - value(before, name, **labels)


async def delivered(api: httpx.AsyncClient, count: int) -> Samples:
    """Scrape until `count` outbound messages are delivered (the in-process delivery loop sends them)."""
    async with asyncio.timeout(30):
        while True:
            samples = await scrape(api)
            if value(samples, "switchboard_outbound_messages", state="delivered") >= count:
                return samples
            await asyncio.sleep(0.05)


async def test_metrics_count_what_a_realistic_flow_did(
    api: httpx.AsyncClient, receiver: Receiver, clock: FakeClock
) -> None:
    before = await scrape(api)
    secret = await create_source(api)
    patched = await api.patch("/v1/admin/sources/intranet", json={"callback_url": receiver.url}, headers=ADMIN)
    assert patched.status_code == 200, patched.text
    await put_rules(api, RULES)

    question = await post_event(api, secret, comment_payload("c-1"), webhook_id="msg_1")
    sales = await post_event(api, secret, comment_payload("c-2", body="cheap watches here"), webhook_id="msg_2")
    redelivered = await post_event(api, secret, comment_payload("c-1"), webhook_id="msg_1")
    forged = await post_event(api, "whsec_" + "A" * 43, comment_payload("c-3"))
    unknown = await post_event(api, secret, comment_payload("c-4"), slug="nobody")
    assert [r.status_code for r in (question, sales, redelivered, forged, unknown)] == [202, 202, 200, 401, 404]
    await drain(api)
    after = await delivered(api, 1)  # the hold of c-2 reached the platform

    # Webhooks: accepted by outcome, refused by the problem code they were answered with.
    assert grew(before, after, "switchboard_webhooks_accepted_total", outcome="created") == 2
    assert grew(before, after, "switchboard_webhooks_accepted_total", outcome="duplicate") == 1
    assert grew(before, after, "switchboard_webhooks_refused_total", reason="invalid_signature") == 1
    assert grew(before, after, "switchboard_webhooks_refused_total", reason="not_found") == 1
    # Requests by route template, method and status class (never the raw path).
    http = "switchboard_http_request_duration_seconds_count"
    assert grew(before, after, http, route=WEBHOOK_ROUTE, method="POST", status="2xx") == 3
    assert grew(before, after, http, route=WEBHOOK_ROUTE, method="POST", status="4xx") == 2
    assert not any(labels and dict(labels).get("route") == "/v1/webhooks/nobody" for _, labels in after)
    # Processing: two comments classified and processed, each placed by its rule.
    assert grew(before, after, "switchboard_classification_seconds_count") == 2
    assert grew(before, after, "switchboard_processing_seconds_count") == 2
    assert grew(before, after, "switchboard_jobs_finished_total", outcome="done") == 2
    assert grew(before, after, "switchboard_routed_items_total", rule="hold-sales") == 1
    assert grew(before, after, "switchboard_routed_items_total", rule="answer-in-an-hour") == 1
    # The tables as they are now: nothing waiting, the hold delivered at the first attempt.
    for state in ("pending", "running", "dead"):
        assert value(after, "switchboard_jobs", state=state) == 0
    assert value(after, "switchboard_jobs_oldest_pending_age_seconds") == 0
    assert value(after, "switchboard_outbound_messages", state="delivered") == 1
    assert value(after, "switchboard_outbound_messages", state="dead") == 0
    assert grew(before, after, "switchboard_outbound_attempts_total", kind="comment.held", outcome="delivered") == 1
    assert [r.type for r in receiver.requests] == ["comment.held"]

    # The question's hour passes unanswered: one SLA breach.
    clock.advance(3601)
    await sla.sweep(api.app.state.services.session_factory, settings=api.app.state.settings, now=clock())  # type: ignore[attr-defined]
    assert grew(after, await scrape(api), "switchboard_sla_breaches_total") == 1


async def test_pending_jobs_and_the_age_of_the_oldest_are_gauged(api: httpx.AsyncClient, clock: FakeClock) -> None:
    secret = await create_source(api)
    await api.app.state.services.backend.close()  # type: ignore[attr-defined]  # nothing runs: jobs stay pending
    started = time.monotonic()
    for n in range(3):
        assert (await post_event(api, secret, comment_payload(f"c-{n}"))).status_code == 202
    clock.advance(90)
    samples = await scrape(api)
    assert value(samples, "switchboard_jobs", state="pending") == 3
    # The clock also runs: the oldest job is 90 s old plus the (real) time since it was posted.
    age = value(samples, "switchboard_jobs_oldest_pending_age_seconds")
    assert 90 <= age <= 90 + (time.monotonic() - started) + 0.5


async def test_metrics_need_the_token(api: httpx.AsyncClient) -> None:
    missing = await api.get("/metrics")
    wrong = await api.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
    an_api_key = await api.get("/metrics", headers=ADMIN)
    for refused in (missing, wrong, an_api_key):
        assert refused.status_code == 401
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["code"] == "unauthenticated"
        assert "switchboard_" not in refused.text
    assert (await api.get("/metrics", headers=SCRAPER)).status_code == 200
    assert "/metrics" not in api.app.openapi()["paths"]  # type: ignore[attr-defined]


async def test_metrics_are_not_served_without_a_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/metrics", headers=SCRAPER)
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


# ---- logs ---------------------------------------------------------------------------------------------------


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Everything logged during the test, as the serve and worker commands configure it (JSON at INFO)."""
    stream = io.StringIO()
    loggers = [logging.getLogger(name) for name in ("", "httpx", "httpcore")]
    levels = [logger.level for logger in loggers]
    handler = logs.configure(level="INFO", log_format="json", stream=stream)
    yield stream
    logging.getLogger().removeHandler(handler)
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


def parsed(stream: io.StringIO) -> list[dict[str, Any]]:
    """Each line must be one JSON object."""
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_log_lines_are_json_and_carry_the_request_id_into_the_job(
    api: httpx.AsyncClient, log_lines: io.StringIO
) -> None:
    secret = await create_source(api)
    body = json.dumps(comment_payload("c-pii", body="Mail jane.doe@example.com or call +44 20 7946 0958?")).encode()
    response = await api.post(
        "/v1/webhooks/intranet",
        content=body,
        headers={**signed_headers(secret, body), "X-Request-ID": "req-from-the-platform-1"},
    )
    assert response.status_code == 202, response.text
    assert response.headers["x-request-id"] == "req-from-the-platform-1"
    await drain(api)

    lines = parsed(log_lines)
    assert all({"time", "level", "logger", "message", "request_id"} <= line.keys() for line in lines)
    mine = [line for line in lines if line["request_id"] == "req-from-the-platform-1"]
    request_line = next(line for line in mine if line["logger"] == "routers.metrics")
    assert (request_line["route"], request_line["status"]) == (WEBHOOK_ROUTE, 202)
    processed = next(line for line in mine if line["logger"] == "service.jobs.processing")
    assert processed["comment_id"] == response.json()["id"]
    assert processed["message"].startswith(f"comment {response.json()['id']} processed")


async def test_no_log_line_holds_the_comments_personal_data(api: httpx.AsyncClient, log_lines: io.StringIO) -> None:
    secret = await create_source(api)
    await put_rules(api, RULES)
    body = "Please call me on +44 20 7946 0958 or write to jane.doe@example.com about the cheap canteen"
    assert (await post_event(api, secret, comment_payload("c-pii", body=body))).status_code == 202
    await drain(api)
    flow = log_lines.getvalue()
    assert "processed" in flow  # the comment's lines were captured
    # A failure that quotes the comment is logged by its class and a redacted first line only.
    try:
        raise RuntimeError(f"could not store {body}\nDETAIL: {body}")
    except RuntimeError:
        logging.getLogger("service.jobs.processing").exception("job failed")
    text = log_lines.getvalue()
    assert "[EMAIL]" in text
    assert "[PHONE]" in text
    assert "DETAIL: Please" not in text
    parsed(log_lines)  # every line still one JSON object

    assert "cheap canteen" not in flow  # no comment body in the processing, routing and request lines
    for personal in ("jane.doe@example.com", "jane.doe", "7946 0958", "+44 20"):
        assert personal not in text
