"""Chat messages are checked as OpenAI's API checks them: a key a role does not have, a missing
content, or an assistant field that could not reach the model is a 400 naming its path; what a
client echoes back from an answer (nulls, an empty `annotations`) is accepted."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.chat import ChatCompletionMessage

from gateway.errors import ApiError
from gateway.openai_request import ParsedRequest, parse_chat

HI = {"role": "user", "content": "hi"}
CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def chat(*messages: dict[str, Any], **fields: Any) -> ParsedRequest:
    return parse_chat({"model": "m", "messages": list(messages), **fields})


def refused(*messages: dict[str, Any], **fields: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        chat(*messages, **fields)
    assert info.value.status == 400
    assert info.value.message.startswith(info.value.param)
    return info.value


@pytest.mark.parametrize(("message", "param"), [
    ({**HI, "foo": 1}, "messages[0].foo"),
    ({"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {}}]},
     "messages[0].content[0].cache_control"),
    ({**HI, "tool_calls": [CALL]}, "messages[0].tool_calls"),
    ({"role": "system", "content": "x", "refusal": "no"}, "messages[0].refusal"),
    ({"role": "tool", "content": "x", "tool_call_id": "c", "tool_calls": [CALL]},
     "messages[0].tool_calls"),
    ({"role": "user", "content": "x", "tool_call_id": "c"}, "messages[0].tool_call_id"),
    ({"role": "assistant", "tool_calls": [{**CALL, "foo": 1}]}, "messages[0].tool_calls[0].foo"),
    ({"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "f", "x": 1}}]},
     "messages[0].tool_calls[0].function.x"),
])
def test_a_key_the_role_does_not_have_is_unknown_parameter(message: dict[str, Any],
                                                           param: str) -> None:
    err = refused(message)
    assert (err.param, err.code) == (param, "unknown_parameter")


def test_a_null_key_is_absent() -> None:
    req = chat({**HI, "tool_calls": None, "foo": None, "name": None})
    assert req.messages is not None and req.messages[0].name is None


def test_a_tool_call_of_another_type_is_invalid_value() -> None:
    err = refused(HI, {"role": "assistant", "tool_calls": [{**CALL, "type": "banana"}]}, HI)
    assert (err.param, err.code) == ("messages[1].tool_calls[0].type", "invalid_value")


@pytest.mark.parametrize("key", ["function_call", "audio"])
def test_assistant_function_call_and_audio_are_unsupported(key: str) -> None:
    err = refused(HI, {"role": "assistant", "content": "x", key: {"id": "a"}})
    assert (err.param, err.code) == (f"messages[1].{key}", "unsupported_parameter")


def test_assistant_annotations_must_be_empty() -> None:
    err = refused(HI, {"role": "assistant", "content": "x", "annotations": [{"type": "url"}]})
    assert (err.param, err.code) == ("messages[1].annotations", "unsupported_value")


def test_an_echoed_answer_is_accepted() -> None:
    """The openai client's message object, dumped whole, as a client sends it back."""
    echoed = ChatCompletionMessage(role="assistant", content="Hello!", refusal=None,
                                   annotations=[], audio=None, function_call=None,
                                   tool_calls=None).model_dump()
    assert {"refusal", "annotations", "audio", "function_call"} <= set(echoed)
    req = chat(HI, echoed, HI)
    assert req.messages is not None and req.messages[1].content == "Hello!"


def test_an_echoed_tool_call_answer_is_accepted() -> None:
    echoed = ChatCompletionMessage.model_validate({
        "role": "assistant", "content": None, "refusal": None, "annotations": [],
        "tool_calls": [CALL]}).model_dump()
    req = chat(HI, echoed, {"role": "tool", "content": "4", "tool_call_id": "call_1"},
               tools=[TOOL])
    assert req.messages is not None
    calls = req.messages[1].tool_calls
    assert calls is not None and (calls[0].id, calls[0].name) == ("call_1", "f")


def test_a_refusal_is_the_assistant_turns_text() -> None:
    req = chat(HI, {"role": "assistant", "content": None, "refusal": "I can't."}, HI)
    assert req.messages is not None and req.messages[1].content == "I can't."


def test_content_and_refusal_together_are_400() -> None:
    err = refused(HI, {"role": "assistant", "content": "Sure.", "refusal": "I can't."})
    assert err.param == "messages[1].refusal"


@pytest.mark.parametrize("role", ["user", "system", "developer", "tool"])
def test_content_is_required(role: str) -> None:
    extra = {"tool_call_id": "c"} if role == "tool" else {}
    for message in ({"role": role, **extra}, {"role": role, "content": None, **extra}):
        assert refused(message).param == "messages[0].content"


def test_assistant_content_is_required_without_tool_calls_or_refusal() -> None:
    assert refused(HI, {"role": "assistant", "content": None}).param == "messages[1].content"


@pytest.mark.parametrize("name", ["", 3, ["bob"]])
def test_name_must_be_a_non_empty_string(name: Any) -> None:
    assert refused({**HI, "name": name}).param == "messages[0].name"


def test_name_reaches_the_message() -> None:
    req = chat({**HI, "name": "bob"})
    assert req.messages is not None and req.messages[0].name == "bob"


@pytest.mark.parametrize("max_tokens", [-5, 0, "4"])
def test_max_tokens_is_checked_beside_max_completion_tokens(max_tokens: Any) -> None:
    assert refused(HI, max_tokens=max_tokens, max_completion_tokens=4).param == "max_tokens"


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    assert chat(HI, max_tokens=9, max_completion_tokens=4).max_tokens == 4


def test_parallel_tool_calls_needs_tools() -> None:
    assert refused(HI, parallel_tool_calls=False).param == "parallel_tool_calls"
    assert chat(HI, parallel_tool_calls=False, tools=[TOOL]).parallel_tool_calls is False


def _asked(*ids: str) -> dict[str, Any]:
    return {"role": "assistant", "content": None,
            "tool_calls": [{**CALL, "id": i} for i in ids]}


def _answer(call_id: str) -> dict[str, Any]:
    return {"role": "tool", "content": "4", "tool_call_id": call_id}


def test_calls_answered_by_the_tool_turns_after_them_are_accepted() -> None:
    req = chat(HI, _asked("a", "b"), _answer("b"), _answer("a"), HI, _asked("c"), _answer("c"))
    assert req.messages is not None and [m.role for m in req.messages][-2:] == ["assistant",
                                                                                "tool"]


@pytest.mark.parametrize(("messages", "param", "says"), [
    ([HI, _asked(""), _answer("")], "messages[1].tool_calls[0].id", "required, a non-empty"),
    ([HI, {"role": "assistant", "tool_calls": [{**CALL, "id": None}]}],
     "messages[1].tool_calls[0].id", "required"),
    ([HI, _asked("a", "a"), _answer("a")], "messages[1].tool_calls[1].id", "duplicate id 'a'"),
    ([HI, _answer("a")], "messages[1].role", "must be a response to a preceding message"),
    ([HI, _asked("a"), _answer("b")], "messages[2].tool_call_id", "'b' answers no unanswered"),
    ([HI, _asked("a"), _answer("a"), _answer("a")], "messages[3].tool_call_id", "'a' answers"),
    ([HI, _asked("a", "b"), _answer("a")], "messages[1].tool_calls", "these have none: b"),
    ([HI, _asked("a"), HI, _answer("a")], "messages[1].tool_calls", "these have none: a"),
])
def test_calls_and_results_that_do_not_pair_are_400_naming_the_turn(
        messages: list[dict[str, Any]], param: str, says: str) -> None:
    """OpenAI's rule: each call answered by a `tool` turn right after its assistant turn."""
    err = refused(*messages)
    assert err.param == param and says in err.message, err.message
