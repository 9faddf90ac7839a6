"""Responses `input` items: stored as sent (every part of a message, the ids and statuses
given), joined for the model as chat joins a message's parts, and refused with a 400 naming
the item when an id, a status or a part's type could not be what the caller meant."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.chat_messages import parse_messages
from gateway.errors import ApiError
from gateway.responses_request import parse_responses


def parsed(items: list[dict[str, Any]]) -> Any:
    return parse_responses({"model": "m", "input": items})


def refusal(items: list[dict[str, Any]]) -> ApiError:
    with pytest.raises(ApiError) as err:
        parsed(items)
    assert err.value.status == 400
    return err.value


def test_a_messages_parts_are_stored_as_sent() -> None:
    parts = [{"type": "input_text", "text": "Hello"}, {"type": "input_text", "text": "world"}]
    answer = [{"type": "output_text", "text": "Hi"}, {"type": "refusal", "refusal": "no"}]
    req = parsed([{"role": "user", "content": parts},
                  {"role": "assistant", "content": answer}])
    assert req.input_items[0]["content"] == parts
    assert req.input_items[1]["content"] == [{**answer[0], "annotations": []}, answer[1]]


def test_parts_reach_the_model_joined_as_chat_joins_them() -> None:
    texts = ["Hello", "world"]
    req = parsed([{"role": "user", "content": [{"type": "input_text", "text": t}
                                               for t in texts]}])
    (chat,) = parse_messages({"messages": [{"role": "user", "content": [
        {"type": "text", "text": t} for t in texts]}]})
    assert req.turn[0].content == chat.content


def test_given_ids_and_statuses_are_kept() -> None:
    req = parsed([{"id": "m1", "role": "user", "content": "a", "status": "incomplete"},
                  {"role": "user", "content": "b"}])
    given, made = req.input_items
    assert (given["id"], given["status"]) == ("m1", "incomplete")
    assert made["id"].startswith("msg_") and made["status"] == "completed"


@pytest.mark.parametrize(("items", "param"), [
    ([{"id": 5, "role": "user", "content": "a"}], "input[0].id"),
    ([{"id": {"x": 1}, "role": "user", "content": "a"}], "input[0].id"),
    ([{"id": "", "role": "user", "content": "a"}], "input[0].id"),
    ([{"id": "m1", "role": "user", "content": "a"},
      {"id": "m1", "role": "user", "content": "b"}], "input[1].id"),
    ([{"role": "user", "content": "a", "status": "bogus"}], "input[0].status"),
    ([{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}", "status": 1},
      {"type": "function_call_output", "call_id": "c", "output": "1"}], "input[0].status"),
])
def test_bad_ids_and_statuses_are_400_naming_them(items: list[dict[str, Any]],
                                                  param: str) -> None:
    assert refusal(items).param == param


@pytest.mark.parametrize(("role", "part", "supported"), [
    ("user", "output_text", "'input_text'"),
    ("system", "output_text", "'input_text'"),
    ("developer", "refusal", "'input_text'"),
    ("assistant", "input_text", "'output_text' and 'refusal'"),
])
def test_a_part_type_its_role_cannot_hold_is_400_naming_the_part(role: str, part: str,
                                                                  supported: str) -> None:
    text = {"refusal": "no"} if part == "refusal" else {"text": "x"}
    err = refusal([{"role": "user", "content": "hi"}, {"role": role, "content": [
        {"type": "output_text" if role == "assistant" else "input_text", "text": "ok"},
        {"type": part, **text}]}])
    assert err.param == "input[1].content[1]"
    assert err.message.endswith(f"Invalid value: '{part}'. Supported values are: {supported}.")


CALL = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}


def test_a_call_output_may_be_text_parts_joined_for_the_model_and_kept() -> None:
    """OpenAI's other form of `output` (the Agents SDK sends it for structured results)."""
    parts = [{"type": "input_text", "text": "22"}, {"type": "input_text", "text": "C"}]
    req = parsed([{"role": "user", "content": "weather?"}, CALL,
                  {"type": "function_call_output", "call_id": "c1", "output": parts}])
    assert req.messages[-1].role == "tool" and req.messages[-1].content == "22C"
    assert req.input_items[-1]["output"] == parts


def test_a_call_output_part_that_is_not_text_is_400_naming_it() -> None:
    image = {"type": "input_image", "image_url": "https://example.com/a.png"}
    err = refusal([{"role": "user", "content": "weather?"}, CALL,
                   {"type": "function_call_output", "call_id": "c1", "output": [image]}])
    assert err.param == "input[2].output[0]" and "only input_text parts" in err.message
    err = refusal([{"role": "user", "content": "x"}, CALL, {
        "type": "function_call_output", "call_id": "c1", "output": 5}])
    assert err.param == "input[2].output" and "or an array of input_text parts" in err.message
