"""The API fuzzed from its own OpenAPI document, on SQLite and PostgreSQL, as an admin and as a responder.

Every operation gets a bounded number of generated requests (valid ones, invalid ones, and ones naming the seeded
world's real objects) from a fixed seed; the webhook route also gets correctly signed bodies, so that the fuzzer
reaches past the signature check. Each answer must not be a 5xx, and its status code, content type, headers and
body must be the ones the document declares. A stateful run then follows the links between operations (create a
thing, then read, change and delete it). About 1.5 minutes in all on this machine's two cores.
"""

from __future__ import annotations

import asyncio

import pytest

from classifiers.pipeline import BatchingAnalyser
from service.settings import Settings
from tests.conftest import make_settings, running_app
from tests.fuzz.runner import WEBHOOK, Fuzzer, operations
from tests.fuzz.world import seed

pytestmark = pytest.mark.fuzz

EXAMPLES = {"admin": 15, "responder": 6}  # per operation
ADMIN_ONLY_EXAMPLES = 3  # a responder's call to an admin route stops at the role check
EXPENSIVE = {"POST /v1/classify": 10, "POST /v1/admin/rules/explain": 10, "POST /v1/admin/topics": 8}  # the model runs
SCENARIOS, STEPS = 15, 8  # stateful: scenarios, and calls in each


def fuzz_settings(database_url: str) -> Settings:
    """No rate limits: the fuzzer's requests should reach the operations, not the limiter."""
    return make_settings(database_url, rate_limit_per_key_per_minute=0, rate_limit_per_source_per_minute=0)


@pytest.mark.parametrize("role", ["admin", "responder"])
async def test_every_operation_answers_as_documented(database_url: str, analyser: BatchingAnalyser, role: str) -> None:
    async with running_app(fuzz_settings(database_url), analyser) as client:
        fuzzer = Fuzzer(client, asyncio.get_running_loop(), await seed(client), role)
        for operation in operations(client.app.openapi()):  # type: ignore[attr-defined]
            examples = EXAMPLES[role]
            if role == "responder" and operation.path.startswith("/v1/admin/"):
                examples = ADMIN_ONLY_EXAMPLES
            examples = min(examples, EXPENSIVE.get(operation.label, examples))
            await asyncio.to_thread(fuzzer.run, operation, examples)
            if operation.label == WEBHOOK:
                await asyncio.to_thread(fuzzer.run, operation, examples, signed=True)
    signed = fuzzer.statuses[f"{WEBHOOK} (signed)"]
    assert signed[202] > 0, signed  # generated events, correctly signed, are stored: the fuzzer got past the check
    assert not fuzzer.failures, fuzzer.report()


async def test_workflows_along_the_api_links_answer_as_documented(
    database_url: str, analyser: BatchingAnalyser
) -> None:
    async with running_app(fuzz_settings(database_url), analyser) as client:
        fuzzer = Fuzzer(client, asyncio.get_running_loop(), await seed(client), "admin")
        await asyncio.to_thread(fuzzer.run_stateful, client.app.openapi(), SCENARIOS, STEPS)  # type: ignore[attr-defined]
    assert sum(fuzzer.requests.values()) >= 50, fuzzer.requests  # the walk went somewhere
    assert not fuzzer.failures, fuzzer.report()
