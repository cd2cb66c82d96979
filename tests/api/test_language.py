"""Language through the API: the heads are withheld only for text confidently in another language."""

from __future__ import annotations

import httpx

from tests.factories import ADMIN

HEADS = ("sentiment", "offensive", "hate", "emotion", "needs_answer")


async def test_short_english_comments_get_every_head_and_only_confident_foreign_text_is_refused(
    client: httpx.AsyncClient,
) -> None:
    texts = ["Wow!", "Okay.", "Goodbye.", "?", "Wann öffnet die Kantine morgens für die Nachtschicht?"]
    response = await client.post("/v1/classify", json={"texts": texts}, headers=ADMIN)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    # "Wow!" was Polish and "Okay." Tagalog to the detector, and their heads were withheld.
    for english in results[:4]:
        assert english["language"]["supported"] is True
        assert all(english[head] is not None for head in HEADS)
    german = results[4]
    assert (german["language"]["code"], german["language"]["supported"]) == ("de", False)
    assert all(german[head] is None for head in HEADS)
