"""Classification through the API: the taxonomy, synchronous classify, stored results, corrections."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import drain
from tests.factories import ADMIN, comment_payload, create_source, post_event

TAXONOMY: list[dict[str, Any]] = [
    {"name": "pay", "description": "Salaries, payslips, bonuses and expenses",
     "examples": ["When will the pay rise show on my payslip?", "My expenses claim has not been reimbursed"]},
    {"name": "it", "description": "Laptops, passwords, VPN, software and printers",
     "examples": ["The VPN keeps dropping when I work from home", "I am locked out of my account again"]},
    {"name": "canteen", "description": "Food, the canteen and its opening hours",
     "examples": ["Will the canteen open earlier for the night shift?", "The vegetarian options are sold out"]},
]  # fmt: skip


async def make_taxonomy(client: httpx.AsyncClient) -> dict[str, int]:
    ids = {}
    for topic in TAXONOMY:
        response = await client.post("/v1/admin/topics", json=topic, headers=ADMIN)
        assert response.status_code == 201, response.text
        ids[topic["name"]] = response.json()["id"]
    return ids


async def classify(client: httpx.AsyncClient, *texts: str) -> list[dict[str, Any]]:
    response = await client.post("/v1/classify", json={"texts": list(texts)}, headers=ADMIN)
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


async def test_topics_can_be_created_listed_changed_and_removed(client: httpx.AsyncClient) -> None:
    ids = await make_taxonomy(client)
    assert [t["name"] for t in (await client.get("/v1/admin/topics", headers=ADMIN)).json()] == ["pay", "it", "canteen"]
    patched = await client.patch(
        f"/v1/admin/topics/{ids['it']}", json={"examples": ["My laptop is slow"]}, headers=ADMIN
    )
    assert patched.json()["examples"] == ["My laptop is slow"]
    assert patched.json()["description"] == TAXONOMY[1]["description"]
    assert (await client.delete(f"/v1/admin/topics/{ids['it']}", headers=ADMIN)).status_code == 204
    assert (await client.get(f"/v1/admin/topics/{ids['it']}", headers=ADMIN)).status_code == 404
    assert [t["name"] for t in (await client.get("/v1/admin/topics", headers=ADMIN)).json()] == ["pay", "canteen"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"name": "PAY"}, 409, "already_exists"),
        ({"name": "Other"}, 422, "invalid_payload"),
        ({"name": ""}, 422, "validation_error"),
        ({"name": "x", "examples": ["e"] * 201}, 422, "validation_error"),
        ({"name": "x", "colour": "red"}, 422, "validation_error"),
    ],
)
async def test_invalid_topics_are_refused(
    client: httpx.AsyncClient, body: dict[str, Any], status: int, code: str
) -> None:
    await client.post("/v1/admin/topics", json=TAXONOMY[0], headers=ADMIN)
    response = await client.post("/v1/admin/topics", json=body, headers=ADMIN)
    assert (response.status_code, response.json()["code"]) == (status, code)
    assert len((await client.get("/v1/admin/topics", headers=ADMIN)).json()) == 1


async def test_classify_returns_every_part_of_the_result(client: httpx.AsyncClient) -> None:
    await make_taxonomy(client)
    [result] = await classify(client, "My payslip is missing last month's overtime, mail me at jo@example.com")
    assert result["topic"]["label"] == "pay"
    assert result["topic"]["nearest"][0]["topic"] == "pay"
    assert result["language"]["code"] == "en"
    assert result["language"]["supported"] is True
    assert result["pii"] == [{"kind": "email", "start": 56, "end": 70}]
    assert result["model_version"].startswith("all-MiniLM-L6-v2")
    for head in ("sentiment", "offensive", "hate", "emotion", "needs_answer"):
        assert head in result


async def test_taxonomy_change_is_used_at_once(client: httpx.AsyncClient) -> None:
    text = "Congratulations to the football team on winning the league!"
    await make_taxonomy(client)
    [before] = await classify(client, text)
    await client.post(
        "/v1/admin/topics", json={"name": "sport", "examples": ["Well done to our five-a-side team"]}, headers=ADMIN
    )
    [after] = await classify(client, text)
    assert (before["topic"]["label"], after["topic"]["label"]) == ("other", "sport")


async def test_correction_teaches_the_topic_model(client: httpx.AsyncClient) -> None:
    await make_taxonomy(client)
    await client.post(
        "/v1/admin/topics", json={"name": "parking", "description": "Car parks and bike sheds"}, headers=ADMIN
    )
    secret = await create_source(client)
    text = "Who decided that the new spaces by building C are only for managers?"
    created = await post_event(client, secret, comment_payload("c-1", body=text))
    [before] = await classify(client, text)
    label = await client.post(f"/v1/comments/{created.json()['id']}/labels", json={"topic": "parking"}, headers=ADMIN)
    assert label.status_code == 201, label.text
    assert label.json()["actor"].startswith("key:")
    [after] = await classify(client, text)
    assert before["topic"]["label"] != "parking"
    assert after["topic"]["label"] == "parking"
    assert after["topic"]["nearest"][0]["text"] == text


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "validation_error"),
        ({"topic": "no-such-topic"}, "invalid_payload"),
        ({"sentiment": "meh"}, "validation_error"),
        ({"flags": {"sarcasm": True}}, "validation_error"),
    ],
)
async def test_invalid_corrections_are_refused(client: httpx.AsyncClient, body: dict[str, Any], code: str) -> None:
    secret = await create_source(client)
    created = await post_event(client, secret, comment_payload())
    response = await client.post(f"/v1/comments/{created.json()['id']}/labels", json=body, headers=ADMIN)
    assert (response.status_code, response.json()["code"]) == (422, code)


async def test_processing_stores_exactly_what_classify_returns(client: httpx.AsyncClient) -> None:
    await make_taxonomy(client)
    secret = await create_source(client)
    text = "The canteen has run out of vegetarian food again, can someone fix this?"
    created = await post_event(client, secret, comment_payload(body=text))
    await drain(client)
    stored = (await client.get(f"/v1/comments/{created.json()['id']}", headers=ADMIN)).json()["classification"]
    [now] = await classify(client, text)
    assert stored == now
    assert stored["topic"]["label"] == "canteen"


async def test_classify_limits_and_access(client: httpx.AsyncClient) -> None:
    too_many = await client.post("/v1/classify", json={"texts": ["x"] * 257}, headers=ADMIN)
    assert (too_many.status_code, too_many.json()["code"]) == (422, "invalid_payload")
    too_long = await client.post("/v1/classify", json={"texts": ["x" * 5001]}, headers=ADMIN)
    assert too_long.status_code == 422
    assert (await client.post("/v1/classify", json={"texts": []}, headers=ADMIN)).status_code == 422
    assert (await client.post("/v1/classify", json={"texts": ["hi"]})).status_code == 401


async def test_taxonomy_change_reclassifies_recent_comments_in_the_background(client: httpx.AsyncClient) -> None:
    await make_taxonomy(client)
    secret = await create_source(client)
    text = "Congratulations to the football team on winning the league!"
    created = await post_event(client, secret, comment_payload(body=text))
    await drain(client)
    url = f"/v1/comments/{created.json()['id']}"
    assert (await client.get(url, headers=ADMIN)).json()["classification"]["topic"]["label"] == "other"
    await client.post(
        "/v1/admin/topics", json={"name": "sport", "examples": ["Well done to our five-a-side team"]}, headers=ADMIN
    )
    await drain(client)
    shown = (await client.get(url, headers=ADMIN)).json()
    assert shown["classification"]["topic"]["label"] == "sport"
    assert shown["processing"]["state"] == "processed"
    jobs = (await client.get("/v1/admin/jobs", headers=ADMIN)).json()["items"]
    assert [j["state"] for j in jobs] == ["done", "done"]


async def test_comment_in_another_language_is_labelled_as_such_not_guessed(client: httpx.AsyncClient) -> None:
    [german, english] = await classify(
        client, "Wann öffnet die Kantine morgens für die Nachtschicht?", "When does the canteen open in the morning?"
    )
    assert german["language"] == {"code": "de", "confidence": german["language"]["confidence"], "supported": False}
    assert all(german[head] is None for head in ("sentiment", "offensive", "hate", "emotion", "needs_answer"))
    assert german["topic"] is not None  # topics are the organisation's own examples: still shown, with neighbours
    assert english["language"]["supported"] is True
