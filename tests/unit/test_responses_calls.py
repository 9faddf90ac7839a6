"""Function calls and their outputs pair up over a Responses conversation: an output answers
a call made before it, a call has its output; else a 400 on `input` in OpenAI's words.
A continuation's history is checked through the live mesh
(tests/integration/test_responses_tool_outputs.py)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import ApiError
from gateway.responses_calls import check_calls_answered
from gateway.responses_request import parse_responses
from kvmesh.wire import ChatMessage, ToolCall

CALL = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}
OUTPUT = {"type": "function_call_output", "call_id": "c1", "output": "42"}
USER = {"role": "user", "content": "hi"}


def refusal(items: list[dict[str, Any]], **extra: Any) -> ApiError:
    with pytest.raises(ApiError) as err:
        parse_responses({"model": "m", "input": items, **extra})
    assert (err.value.status, err.value.param) == (400, "input")
    return err.value


@pytest.mark.parametrize(("items", "call_id"), [
    ([OUTPUT], "c1"),  # the first item: nothing before it called
    ([USER, OUTPUT], "c1"),
    ([USER, CALL, {**OUTPUT, "call_id": "c2"}], "c2"),
    ([USER, OUTPUT, CALL], "c1"),  # the call comes after its output
])
def test_an_output_without_its_call_is_400(items: list[dict[str, Any]], call_id: str) -> None:
    assert refusal(items).message.endswith(
        f"No tool call found for function call output with call_id {call_id}.")


def test_a_call_without_its_output_is_400() -> None:
    for items in ([USER, CALL], [USER, CALL, USER]):
        assert refusal(items).message.endswith("No tool output found for function call c1.")


def test_paired_calls_pass_and_a_continuation_waits_for_its_history() -> None:
    parse_responses({"model": "m", "input": [USER, CALL, OUTPUT]})
    # the call it answers is in the stored history, read after parsing
    req = parse_responses({"model": "m", "input": [OUTPUT],
                           "previous_response_id": "resp_" + "0" * 32})
    history = [ChatMessage("user", "hi"),
               ChatMessage("assistant", "", tool_calls=[ToolCall("c1", "f", "{}")])]
    req.with_history(history)
    check_calls_answered(req.messages)
    req.with_history(history[:1])
    with pytest.raises(ApiError):
        check_calls_answered(req.messages)
