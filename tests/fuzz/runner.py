"""Schemathesis cases sent through the in-process app, and every answer checked against the OpenAPI document.

The app runs on the test's event loop (`running_app`, with the session's shared analyser); Hypothesis draws cases
in a worker thread (`asyncio.to_thread`) and hands each request to that loop, so background jobs keep running
between requests as they do in production. A failing case is recorded and the run goes on, so that one run
reports every operation that misbehaves, not only the first.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
import traceback
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky
from requests.structures import CaseInsensitiveDict
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.signing import sign
from tests.fuzz.world import HOOKS, World

SEED = 20261121
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
WEBHOOK = "POST /v1/webhooks/{slug}"
Operation = schemathesis.APIOperation[Any, Any, Any, Any]
Case = schemathesis.Case[Operation]
KEY_ACTIONS = ("POST /v1/admin/api-keys/{key_id}/revoke", "POST /v1/admin/api-keys/{key_id}/rotate")


def destructiveness(label: str) -> int:
    """0, or 1 for operations that replace the world's objects, 2 for those that retire them."""
    if label.startswith("DELETE "):
        return 2
    return 1 if label.endswith(("/revoke", "/rotate", "/rotate-secret")) else 0


def operations(document: dict[str, Any]) -> list[Operation]:
    """Every operation of the document; those that replace or retire objects last, so the others meet them alive."""
    schema = schemathesis.openapi.from_dict(document)
    found = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]  # Err raises
    return sorted(found, key=lambda op: destructiveness(op.label))


@dataclass
class Fuzzer:
    """One role's fuzzing run over a seeded world; `failures` maps (operation, problem) to a reproduction."""

    client: httpx.AsyncClient
    loop: asyncio.AbstractEventLoop
    world: World
    role: str
    failures: dict[tuple[str, str], str] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    seconds: dict[str, float] = field(default_factory=dict)
    stateful_stopped_early: bool = False

    def run(self, operation: Operation, examples: int, *, signed: bool = False) -> None:
        """Send `examples` generated cases (valid ones, invalid ones, and ones naming real objects)."""
        label = operation.label + (" (signed)" if signed else "")
        started = time.perf_counter()

        @seed(SEED)
        @settings(
            max_examples=examples,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(self._cases(operation, signed=signed))
        def fuzz(case: Case) -> None:
            self._exercise(label, case, signed=signed)

        fuzz()
        self.seconds[label] = time.perf_counter() - started

    def _cases(self, operation: Operation, *, signed: bool) -> st.SearchStrategy[Case]:
        names = {p.name for p in operation.path_parameters}
        real = {name: value for name, value in self.world.path_values.items() if name in names}
        if signed:
            real = {"slug": HOOKS}
        options = [operation.as_strategy(GenerationMode.POSITIVE, path_parameters=real or None)]
        if not signed:
            options.append(operation.as_strategy(GenerationMode.POSITIVE))
            options.append(operation.as_strategy(GenerationMode.NEGATIVE))
        return st.one_of(options)

    def run_stateful(self, document: dict[str, Any], scenarios: int, steps: int) -> None:
        """Walk the links schemathesis infers between operations (create, then read, change, delete what was made)."""
        fuzzer, started = self, time.perf_counter()

        class Workflow(schemathesis.openapi.from_dict(document).as_state_machine()):  # type: ignore[misc]
            def call(self, case: Case, **kwargs: Any) -> schemathesis.Response:  # noqa: ARG002
                response = fuzzer._exercise(f"stateful {case.operation.label}", case)
                return schemathesis.Response.from_any(response) if response is not None else _no_response(case)

            def validate_response(self, *args: Any, **kwargs: Any) -> None:
                """Checked in `call` already (failures are recorded there, and the walk goes on)."""

        run = functools.partial(
            Workflow.run,
            settings=settings(
                max_examples=scenarios,
                stateful_step_count=steps,
                derandomize=True,
                database=None,
                deadline=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            ),
        )
        try:
            run()
        except Flaky:  # the live state made a replayed scenario choose differently: stop there, as schemathesis does
            self.stateful_stopped_early = True
        self.seconds["stateful"] = time.perf_counter() - started

    def _exercise(self, label: str, case: Case, *, signed: bool = False) -> httpx.Response | None:
        if case.operation.label in KEY_ACTIONS and case.path_parameters.get("key_id") in self.world.protected_key_ids:
            case.path_parameters["key_id"] = self.world.path_values["key_id"]  # never lock the fuzzer out
        if case.operation.label != WEBHOOK:
            case.headers = case.headers or CaseInsensitiveDict()
            case.headers["Authorization"] = f"Bearer {self.world.keys[self.role]}"
        request = case.as_transport_kwargs(base_url=str(self.client.base_url))
        if signed:
            request = self._signed(request)
        self.requests[label] = self.requests.get(label, 0) + 1
        try:
            response = self._send(request)
        except Exception as exc:  # the app raised through the transport: a crash, whatever the checks say
            summary = "".join(traceback.format_exception_only(exc)).strip()
            self._record(label, type(exc).__name__, f"{summary}\n{_request_line(request)}\n{traceback.format_exc()}")
            return None
        self.statuses[label][response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except FailureGroup as group:
            for failure in group.exceptions:
                self._record(
                    label, failure.title, f"{response.status_code} {failure.message}\n{_request_line(request)}"
                )
        return response

    def _signed(self, request: dict[str, Any]) -> dict[str, Any]:
        """The request with its body as bytes and Standard Webhooks headers that sign exactly those bytes."""
        body = json.dumps(request.pop("json")).encode() if "json" in request else _as_bytes(request.pop("data", b""))
        webhook_id, timestamp = f"msg_{uuid.uuid4().hex}", int(time.time())
        headers = {k: v for k, v in request["headers"].items() if not k.lower().startswith("webhook-")}
        headers |= {
            "Content-Type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self.world.hooks_secret, webhook_id=webhook_id, timestamp=timestamp, body=body),
        }
        return {**request, "headers": headers, "content": body}

    def _send(self, request: dict[str, Any]) -> httpx.Response:
        arguments = {k: v for k, v in request.items() if k in ("method", "url", "headers", "params", "json", "content")}
        if "data" in request:
            data = request["data"]
            arguments["data" if isinstance(data, dict) else "content"] = data
        sent = asyncio.run_coroutine_threadsafe(self.client.request(**arguments), self.loop)
        response: httpx.Response = sent.result(timeout=120)
        return response

    def _record(self, label: str, problem: str, reproduction: str) -> None:
        self.failures.setdefault((label, problem), reproduction)

    def report(self) -> str:
        """The failures, one block each, for the assertion message."""
        return "\n\n".join(
            f"[{self.role}] {label}: {problem}\n{text}" for (label, problem), text in self.failures.items()
        )


def _no_response(case: Case) -> schemathesis.Response:
    """What the state machine sees after a crash was recorded: a 500, so that no link is followed from it."""
    request = httpx.Request(case.method, f"http://switchboard.test{case.formatted_path}")
    return schemathesis.Response.from_any(httpx.Response(500, request=request))


def _as_bytes(data: Any) -> bytes:
    if isinstance(data, bytes):
        return data
    return str(data).encode() if data else b""


def _request_line(request: dict[str, Any]) -> str:
    body = request.get("json", request.get("content", request.get("data")))
    text = repr(body)
    return f"{request['method']} {request['url']} params={request.get('params')!r} body={text[:500]}"
