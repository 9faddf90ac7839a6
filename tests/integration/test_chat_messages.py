"""Chat messages end to end: what the model is shown for `developer` and `name` (through
/tokenize, the router's own template rendering), an answer sent back by the openai client, and
the 400s of messages and fields OpenAI's API refuses."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conftest import MODEL, Mesh
from tests.integration.helpers import post

CHAT = "/v1/chat/completions"
HI = {"role": "user", "content": "hi"}


def tokens(mesh: Mesh, *messages: dict[str, Any]) -> list[int]:
    status, body, _ = post(mesh.base_url + "/tokenize", {"model": MODEL,
                                                          "messages": list(messages)})
    assert status == 200, body
    return body["tokens"]


def text(mesh: Mesh, ids: list[int]) -> str:
    status, body, _ = post(mesh.base_url + "/detokenize", {"model": MODEL, "tokens": ids})
    assert status == 200, body
    return body["prompt"]


def test_developer_replaces_the_default_system_prompt_as_system_does(mesh: Mesh) -> None:
    terse = "Be terse."
    as_developer = tokens(mesh, {"role": "developer", "content": terse}, HI)
    assert as_developer == tokens(mesh, {"role": "system", "content": terse}, HI)
    assert "developer" not in text(mesh, as_developer)


def test_a_name_is_shown_to_the_model(mesh: Mesh) -> None:
    named = text(mesh, tokens(mesh, {**HI, "name": "bob"}))
    assert "bob: hi" in named and named != text(mesh, tokens(mesh, HI))


def test_an_answer_sent_back_by_the_openai_client_is_served(client: Any) -> None:
    first = client.chat.completions.create(model=MODEL, messages=[HI], max_tokens=4,
                                           temperature=0)
    answer = first.choices[0].message
    again = client.chat.completions.create(
        model=MODEL, max_tokens=4, temperature=0,
        messages=[HI, answer, {"role": "user", "content": "and again"}])
    assert again.choices[0].message.role == "assistant"
    whole = answer.model_dump()  # every key, nulls included, as some clients send it
    assert {"refusal", "audio", "function_call", "annotations"} <= set(whole)
    status, body, _ = post(str(client.base_url) + "chat/completions", {
        "model": MODEL, "max_tokens": 2, "messages": [HI, whole, HI]})
    assert status == 200, body


@pytest.mark.parametrize(("fields", "param", "code"), [
    ({"messages": [{"role": "user", "content": None}]}, "messages[0].content", "invalid_value"),
    ({"messages": [{"role": "user"}]}, "messages[0].content", "invalid_value"),
    ({"messages": [{**HI, "foo": 1}]}, "messages[0].foo", "unknown_parameter"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi",
                                                  "cache_control": {"type": "ephemeral"}}]}]},
     "messages[0].content[0].cache_control", "unknown_parameter"),
    ({"messages": [HI, {"role": "assistant", "content": "x", "audio": {"id": "a"}}]},
     "messages[1].audio", "unsupported_parameter"),
    ({"max_tokens": -5, "max_completion_tokens": 4}, "max_tokens", "invalid_value"),
    ({"parallel_tool_calls": False}, "parallel_tool_calls", "invalid_value"),
])
def test_refused_messages_and_fields_are_400s_naming_them(mesh: Mesh, fields: dict[str, Any],
                                                          param: str, code: str) -> None:
    status, body, _ = post(mesh.base_url + CHAT, {"model": MODEL, "messages": [HI], **fields})
    assert status == 400, body
    assert (body["error"]["param"], body["error"]["code"]) == (param, code)


@pytest.mark.parametrize(("field", "value"), [
    ("add_generation_prompt", False), ("continue_final_message", False),
    ("chat_template_kwargs", {"a": 1}), ("tools", [{"type": "function", "function": {
        "name": "f"}}])])
def test_tokenize_refuses_chat_only_fields_with_a_prompt(mesh: Mesh, field: str,
                                                        value: Any) -> None:
    status, body, _ = post(mesh.base_url + "/tokenize", {"model": MODEL, "prompt": "hi",
                                                          field: value})
    assert status == 400, body
    assert body["error"]["param"] == field
