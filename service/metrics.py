"""Prometheus metrics: every `switchboard_*` metric is defined here, once. Domain code counts; routers expose.

Two kinds:
- **Counters and histograms** that the code moves as things happen (requests, webhooks, processing, routing, SLA
  breaches, delivery attempts). They are module-level objects, as prometheus-client is built to be used: they hold
  numbers only (no connection, no setting), in process memory, or in files under `PROMETHEUS_MULTIPROC_DIR` when
  that variable is set (several uvicorn workers, arq workers beside them), where `exposition` adds them all up.
- **Gauges read from the database at scrape time** (`table_families`; `service.monitoring` runs the queries):
  jobs pending / running / dead and the age of the oldest due job, outbound messages by state. One grouped count
  each, on indexed columns; never kept in a process, so several processes never report them twice.

This module imports nothing of Switchboard's, so that any domain module may import it.

Labels are bounded: route templates (never raw paths), problem codes, outcomes, rule ids, message kinds.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

REGISTRY = CollectorRegistry(auto_describe=True)

_FAST = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SLOW = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

HTTP_REQUEST_SECONDS = Histogram(
    "switchboard_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template, method and status class (2xx, 4xx, ...).",
    ["route", "method", "status"],
    buckets=_FAST,
    registry=REGISTRY,
)
WEBHOOKS_ACCEPTED = Counter(
    "switchboard_webhooks_accepted",
    "Webhook deliveries acknowledged, by outcome (created, updated, deleted, unchanged, duplicate, ...).",
    ["outcome"],
    registry=REGISTRY,
)
WEBHOOKS_REFUSED = Counter(
    "switchboard_webhooks_refused",
    "Webhook deliveries refused, by reason: the problem code answered (invalid_signature, rate_limited, ...).",
    ["reason"],
    registry=REGISTRY,
)
CLASSIFICATION_SECONDS = Histogram(
    "switchboard_classification_seconds",
    "Model time per comment (a batch's encoder and heads time divided by its comments).",
    buckets=_FAST,
    registry=REGISTRY,
)
PROCESSING_SECONDS = Histogram(
    "switchboard_processing_seconds",
    "Time to process a comment: its batch from loading the comments to the commit of analyses and queue items.",
    buckets=_SLOW,
    registry=REGISTRY,
)
JOBS_FINISHED = Counter(
    "switchboard_jobs_finished",
    "Comment jobs finished by a runner, by outcome: done, retry (failed, to be tried again) or dead.",
    ["outcome"],
    registry=REGISTRY,
)
ROUTED_ITEMS = Counter(
    "switchboard_routed_items",
    "Queue items created by routing, by the id of the rule that placed them.",
    ["rule"],
    registry=REGISTRY,
)
SLA_BREACHES = Counter(
    "switchboard_sla_breaches",
    "Queue items escalated because their SLA passed unanswered.",
    registry=REGISTRY,
)
OUTBOUND_ATTEMPTS = Counter(
    "switchboard_outbound_attempts",
    "Outbound delivery attempts, by message kind and outcome: delivered, failed (retried later), dead, deferred "
    "(held back by the target's rate limit, not counted as an attempt of the message).",
    ["kind", "outcome"],
    registry=REGISTRY,
)


def table_families(*, jobs: Mapping[str, int], oldest_pending_age: float, outbound: Mapping[str, int]) -> list[Metric]:
    """The gauges read from the database at scrape time (`service.monitoring` reads them), as metric families."""
    by_state = GaugeMetricFamily("switchboard_jobs", "Comment jobs in the job table, by state.", labels=["state"])
    for state, count in jobs.items():
        by_state.add_metric([state], count)
    age = GaugeMetricFamily(
        "switchboard_jobs_oldest_pending_age_seconds",
        "How long the oldest pending job has been due without a runner taking it (0: none waiting).",
        value=oldest_pending_age,
    )
    messages = GaugeMetricFamily(
        "switchboard_outbound_messages", "Outbound messages in the outbox, by delivery state.", labels=["state"]
    )
    for state, count in outbound.items():
        messages.add_metric([state], count)
    return [by_state, age, messages]


class _Scrape:
    """One scrape: this process's metrics (or every process's, in multiprocess mode) and the table gauges."""

    def __init__(self, gauges: Sequence[Metric]) -> None:
        self._gauges = gauges

    def collect(self) -> Iterable[Metric]:
        base: Collector = REGISTRY
        if multiprocess_dir():
            base = MultiProcessCollector(None)  # type: ignore[no-untyped-call]  # prometheus-client leaves it untyped
        yield from base.collect()
        yield from self._gauges


def multiprocess_dir() -> str | None:
    """The directory processes share their metrics through (PROMETHEUS_MULTIPROC_DIR), if set."""
    return os.environ.get(MULTIPROC_ENV) or None


def exposition(gauges: Sequence[Metric]) -> bytes:
    """The Prometheus text exposition of every counter and histogram, and of `gauges`."""
    return generate_latest(_Scrape(gauges))
