"""`parallel_tool_calls: false` keeps the first tool call of an answer and drops the rest, in
the gathered answer and in the stream alike: no delta of a second call is ever sent."""

from __future__ import annotations

import json

import pytest

from gateway.openai_response import Gather, StreamShape
from gateway.tool_calls import split_tool_calls
from kvmesh.wire import Chunk

NAMES = frozenset({"f", "g"})
TWO_CALLS = ('Checking.\n<tool_call>{"name": "f", "arguments": {"x": 1}}</tool_call>\n'
             '<tool_call>{"name": "g", "arguments": {}}</tool_call>')


def _chunks(text: str, size: int) -> list[Chunk]:
    pieces = [text[i:i + size] for i in range(0, len(text), size)]
    return [Chunk("r", i, 0, p, [1], finish_reason="stop" if i == len(pieces) - 1 else None)
            for i, p in enumerate(pieces)]


def _streamed(shape: StreamShape, chunks: list[Chunk]) -> tuple[str, list[dict], str | None]:
    """(content, tool-call deltas, last finish_reason) of a stream's payloads."""
    content, deltas, reason = "", [], None
    for c in chunks:
        for p in shape.payloads(c):
            choice = p["choices"][0]
            content += choice["delta"].get("content") or ""
            deltas += choice["delta"].get("tool_calls") or []
            reason = choice["finish_reason"] or reason
    return content, deltas, reason


def test_only_the_first_call_is_kept_when_parallel_is_false() -> None:
    content, calls = split_tool_calls(TWO_CALLS, NAMES, parallel=False)
    assert content == "Checking."
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("f", {"x": 1})]
    assert len(split_tool_calls(TWO_CALLS, NAMES)[1]) == 2  # the default keeps every call


def test_the_gathered_answer_has_one_call() -> None:
    gather = Gather(1, False, NAMES, parallel_tool_calls=False)
    for c in _chunks(TWO_CALLS, 5):
        gather.add(c)
    choice = gather.chat("r", 0, "m")["choices"][0]
    assert [t["function"]["name"] for t in choice["message"]["tool_calls"]] == ["f"]
    assert choice["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("size", [1, 4, 1000])
def test_no_delta_of_a_second_call_is_streamed(size: int) -> None:
    shape = StreamShape("chat", "r", 0, "m", False, NAMES, parallel_tool_calls=False)
    content, deltas, reason = _streamed(shape, _chunks(TWO_CALLS, size))
    assert content == "Checking." and reason == "tool_calls"
    assert {d["index"] for d in deltas} == {0}
    assert [d["function"]["name"] for d in deltas if "id" in d] == ["f"]


def test_a_second_call_cut_off_by_max_tokens_is_not_shown_as_content() -> None:
    text = TWO_CALLS[:-len('{}}</tool_call>')]
    shape = StreamShape("chat", "r", 0, "m", False, NAMES, parallel_tool_calls=False)
    content, deltas, _ = _streamed(shape, _chunks(text, 3))
    assert content == "Checking." and len([d for d in deltas if "id" in d]) == 1
    assert split_tool_calls(text, NAMES, parallel=False)[0] == "Checking."
