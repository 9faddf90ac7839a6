"""A call ends at the first `</tool_call>` outside its JSON's strings (gateway/tool_calls.py
`CloseTagScan`): an argument may hold the tag itself (a schema's enum may even force it), and
the call is still a call, gathered and streamed alike, whole or cut off."""

from __future__ import annotations

import json

import pytest

from gateway.openai_response import Gather, StreamShape
from gateway.tool_calls import ToolCallStream, split_tool_calls
from kvmesh.wire import Chunk, ToolCall

NAMES = frozenset({"emit"})
TAGGED = {"s": "a</tool_call>b"}
ESCAPED = {"s": 'say "</tool_call>" \\', "t": ["</tool_call>"]}


def _call(args: dict) -> str:
    return f'<tool_call>{json.dumps({"name": "emit", "arguments": args})}</tool_call>'


def _streamed(text: str, size: int, cut_off: bool = False) -> list[str | ToolCall]:
    stream = ToolCallStream(NAMES)
    events = [e for i in range(0, len(text), size) for e in stream.feed(text[i:i + size])]
    return events + stream.finish(cut_off)


@pytest.mark.parametrize("args", [TAGGED, ESCAPED])
@pytest.mark.parametrize("size", [1, 2, 5, 1000])
def test_a_close_tag_inside_an_argument_does_not_end_the_call(args, size) -> None:
    text = f"Sure.{_call(args)}{_call({'s': 'next'})} Done."
    events = _streamed(text, size)
    assert [json.loads(e.arguments) for e in events if isinstance(e, ToolCall)] == [
        args, {"s": "next"}]
    assert "".join(e for e in events if isinstance(e, str)) == "Sure. Done."
    content, calls = split_tool_calls(text, NAMES)
    assert (content, [json.loads(c.arguments) for c in calls]) == (
        "Sure. Done.", [args, {"s": "next"}])


@pytest.mark.parametrize("size", [1, 3, 1000])
def test_the_answer_of_a_call_holding_the_tag_finishes_as_tool_calls(size) -> None:
    text = _call(TAGGED)
    gather, shape = Gather(1, False, NAMES), StreamShape("chat", "r", 0, "m", False, NAMES)
    pieces = [text[i:i + size] for i in range(0, len(text), size)]
    payloads = []
    for i, piece in enumerate(pieces):
        chunk = Chunk("r", i, 0, piece, [1],
                      finish_reason="stop" if i == len(pieces) - 1 else None)
        gather.add(chunk)
        payloads += shape.payloads(chunk)
    whole = gather.chat("r", 0, "m")["choices"][0]
    assert whole["finish_reason"] == payloads[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert whole["message"]["content"] is None
    assert json.loads(whole["message"]["tool_calls"][0]["function"]["arguments"]) == TAGGED
    streamed = "".join(tc["function"]["arguments"] for p in payloads
                       for tc in p["choices"][0]["delta"].get("tool_calls") or [])
    assert json.loads(streamed) == TAGGED
    assert not any(p["choices"][0]["delta"].get("content") for p in payloads)


@pytest.mark.parametrize(("text", "arguments"), [
    ('<tool_call>{"name":"emit","arguments":{"s":"a</tool_call>', '{"s":"a</tool_call>'),
    ('<tool_call>{"name":"emit","arguments":{"s":"a</tool', '{"s":"a</tool'),
    ('<tool_call>{"name":"emit","arguments":{"s":"a"}}</tool', '{"s": "a"}')])
def test_a_call_cut_off_after_a_tag_in_its_argument_keeps_that_text(text, arguments) -> None:
    content, calls = split_tool_calls(text, NAMES, cut_off=True)
    assert (content, [(c.name, c.arguments) for c in calls]) == (None, [("emit", arguments)])
    for size in (1, 3, 1000):
        assert [(e.name, e.arguments) for e in _streamed(text, size, cut_off=True)] == [
            ("emit", arguments)]


def test_a_call_that_leaves_a_string_open_ends_at_its_first_tag() -> None:
    """Broken JSON (a quote never closed) that the model ended is no call: it ends at its
    first tag and stays content, markup and all, and what follows is read on."""
    broken = '<tool_call>{"name":"emit","arguments":{"s":"a}}</tool_call>'
    text = f"{broken} then {_call({'s': 'ok'})}"
    for size in (1, 4, 1000):
        events = _streamed(text, size)
        assert "".join(e for e in events if isinstance(e, str)) == f"{broken} then"
        assert [json.loads(e.arguments) for e in events if isinstance(e, ToolCall)] == [
            {"s": "ok"}]


def test_the_gathered_answer_knows_max_tokens_cut_the_call() -> None:
    text = '<tool_call>{"name":"emit","arguments":{"s":"a</tool_call>'
    gather = Gather(1, False, NAMES)
    gather.add(Chunk("r", 0, 0, text, [1], finish_reason="length"))
    whole = gather.chat("r", 0, "m")["choices"][0]
    assert whole["finish_reason"] == "length" and whole["message"]["content"] is None
    assert whole["message"]["tool_calls"][0]["function"]["arguments"] == '{"s":"a</tool_call>'
