"""`POST /v1/responses/input_tokens` through the official client (`responses.input_tokens
.count`): the count equals the `usage.input_tokens` of the response the same fields make,
with instructions and tools, after `previous_response_id` and in a conversation; `truncation:
auto` counts what would be sent; bad fields are 400s naming them. The mesh is
test_conversations.py's: auth on, the responses and conversations stores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.integration.conftest import MAX_MODEL_LEN, MODEL, Mesh
from tests.integration.test_conversations import ConversationsMesh, conversations_mesh

TOOL = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}


@pytest.fixture(scope="module")
def cmesh(mesh: Mesh, redis_url: str, logs_dir: Path) -> Iterator[ConversationsMesh]:
    with conversations_mesh(mesh, redis_url, logs_dir) as cm:
        yield cm


def _used(client: openai.OpenAI, **fields: Any) -> int:
    resp = client.responses.create(model=MODEL, max_output_tokens=4, temperature=0, **fields)
    assert resp.usage is not None
    return resp.usage.input_tokens


def _count(client: openai.OpenAI, **fields: Any) -> int:
    got = client.responses.input_tokens.count(model=MODEL, **fields)
    assert got.object == "response.input_tokens"
    return got.input_tokens


def test_the_count_is_the_responses_input_tokens(cmesh: ConversationsMesh) -> None:
    client = cmesh.client()
    for fields in ({"input": "Hello there."},
                   {"input": "Weather in Paris?", "instructions": "Be brief.", "tools": [TOOL]},
                   {"input": [{"role": "user", "content": "Hi."},
                              {"role": "assistant", "content": "Hello!"},
                              {"role": "user", "content": "Count to three."}]}):
        assert _count(client, **fields) == _used(client, **fields) > 5, fields
    first = client.responses.create(model=MODEL, input="My name is Ada.", temperature=0,
                                    max_output_tokens=6)
    after = {"input": "What is my name?", "previous_response_id": first.id}
    assert _count(client, **after) == _used(client, **after)
    conv = client.conversations.create(items=[{"type": "message", "role": "user",
                                               "content": "I live in Oslo."}])
    inside = {"input": "Where do I live?", "conversation": conv.id}
    counted = _count(client, **inside)
    items = len(client.conversations.items.list(conv.id).data)
    assert counted == _used(client, **inside)  # this turn is appended after it
    assert len(client.conversations.items.list(conv.id).data) == items + 2  # counting adds none


def test_truncation_auto_counts_what_would_be_sent(cmesh: ConversationsMesh) -> None:
    client = cmesh.client()
    turns = []
    for i in range(12):
        turns += [{"role": "user", "content": f"Story {i}: " + "once upon a time " * 20},
                  {"role": "assistant", "content": "And then? " * 10}]
    turns.append({"role": "user", "content": "The end?"})
    whole = _count(client, input=turns)
    assert whole > MAX_MODEL_LEN  # counted, not refused
    with pytest.raises(openai.BadRequestError):  # ... as a response of it would be
        _used(client, input=turns)
    cut = _count(client, input=turns, truncation="auto")
    assert cut < MAX_MODEL_LEN and cut == _used(client, input=turns, truncation="auto")


def test_bad_fields_are_400s_naming_them(cmesh: ConversationsMesh) -> None:
    client = cmesh.client()
    for extra, param in (({"stream": True}, "stream"), ({"personality": "friendly"},
                                                         "personality"),
                         ({"reasoning": {"effort": "low"}}, "reasoning"),
                         ({"previous_response_id": "resp_" + "0" * 32}, "previous_response_id"),
                         ({"tools": [{"type": "web_search"}]}, "tools[0].type")):
        with pytest.raises(openai.BadRequestError) as err:
            client.responses.input_tokens.count(model=MODEL, input="Hi", extra_body=extra)
        assert err.value.body["param"] == param, (extra, err.value.body)
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.input_tokens.count(input="Hi")
    assert err.value.body["param"] == "model"
    with pytest.raises(openai.NotFoundError):
        client.responses.input_tokens.count(model=MODEL, input="Hi",
                                            conversation="conv_" + "0" * 32)
    assert client.responses.input_tokens.count(model=MODEL, input="Hi",
                                               personality=None).input_tokens > 0
