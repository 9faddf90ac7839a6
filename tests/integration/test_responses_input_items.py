"""`GET /v1/responses/{id}/input_items` lists the input as it was sent: every part of a
message, the ids and statuses given (and pages by those ids); the model sees a message's parts
joined as chat joins them. Ids, statuses and part types that could not be listed so are 400s
naming them (gateway/responses_input.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import MODEL, Mesh
from tests.integration.helpers import call
from tests.integration.responses_gateway import responses_gateway

PARTS = [{"type": "input_text", "text": "Hello"}, {"type": "input_text", "text": "world"}]
INPUT = [{"id": "in_1", "type": "message", "role": "user", "content": PARTS},
         {"id": "in_2", "type": "message", "role": "assistant", "status": "incomplete",
          "content": [{"type": "output_text", "text": "Hi", "annotations": []}]},
         {"role": "user", "content": "Say it again."}]


@pytest.fixture(scope="module")
def base(mesh: Mesh, redis_url: str, logs_dir: Path) -> Iterator[str]:
    with responses_gateway(mesh, redis_url, logs_dir, "input-items") as url:
        yield url


def _create(base: str, items: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    body = {"model": MODEL, "input": items, "max_output_tokens": 2, "temperature": 0}
    status, got, _ = call("POST", base + "/v1/responses", body)
    return status, got


def _page(base: str, rid: str, query: str) -> dict[str, Any]:
    status, got, _ = call("GET", f"{base}/v1/responses/{rid}/input_items?{query}")
    assert status == 200, got
    return got


def test_input_items_are_listed_as_sent_and_page_by_their_ids(base: str) -> None:
    status, made = _create(base, INPUT)
    assert status == 200, made
    listed = _page(base, made["id"], "order=asc")["data"]
    assert [i["content"] for i in listed[:2]] == [PARTS, INPUT[1]["content"]]
    assert [(i["id"], i["status"]) for i in listed[:2]] == [("in_1", "completed"),
                                                            ("in_2", "incomplete")]
    first = _page(base, made["id"], "order=asc&limit=1")
    assert first["last_id"] == "in_1" and first["has_more"]
    assert _page(base, made["id"], "order=asc&limit=1&after=in_1")["first_id"] == "in_2"


def test_parts_cost_what_chat_charges_for_the_same_parts(base: str) -> None:
    status, made = _create(base, INPUT[:1])
    assert status == 200, made
    chat = {"model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": [
        {"type": "text", "text": p["text"]} for p in PARTS]}]}
    status, chatted, _ = call("POST", base + "/v1/chat/completions", chat)
    assert status == 200 and made["usage"]["input_tokens"] == chatted["usage"]["prompt_tokens"]


@pytest.mark.parametrize(("items", "param"), [
    ([{**INPUT[0], "id": 5}], "input[0].id"),
    ([{**INPUT[0], "id": {"x": 1}}], "input[0].id"),
    ([INPUT[0], {**INPUT[2], "id": "in_1"}], "input[1].id"),
    ([{**INPUT[0], "status": "bogus"}], "input[0].status"),
    ([{"role": "user", "content": [{"type": "output_text", "text": "x"}]}],
     "input[0].content[0]"),
    ([INPUT[0], {"role": "assistant", "content": PARTS}], "input[1].content[0]"),
])
def test_what_could_not_be_listed_as_sent_is_400_naming_it(
        base: str, items: list[dict[str, Any]], param: str) -> None:
    status, got = _create(base, items)
    assert status == 400 and got["error"]["param"] == param, got
