"""A tool call cut off by max_tokens is still a call, as OpenAI answers one: its arguments as
far as they were written (maybe not JSON yet) and `finish_reason` `length`, gathered and
streamed alike. One cut off before its name is dropped (or, when `tool_choice` named the
function, is a call to it); kvmesh's `<tool_call>` markup never reaches a client as content."""

from __future__ import annotations

import json

import pytest

from gateway.openai_response import Gather, StreamShape
from gateway.tool_calls import split_tool_calls
from kvmesh.wire import Chunk

NAMES = frozenset({"get_weather", "get_time"})
CALL = '<tool_call>{"name":"get_weather","arguments":{"city":"Paris"}}</tool_call>'


@pytest.mark.parametrize(("text", "named", "call"), [
    (CALL[:-len("</tool_call>")], None, ("get_weather", '{"city": "Paris"}')),
    (CALL[:-4], None, ("get_weather", '{"city": "Paris"}')),  # inside the closing tag
    (CALL[:-15], None, ("get_weather", '{"city":"Paris')),
    ('<tool_call>{"name":"get_weather","arguments":', None, ("get_weather", "")),
    ('<tool_call>{"name":"get_weather","argu', None, ("get_weather", "")),
    ('<tool_call>{"name":"get_weather"', None, ("get_weather", "")),
    ('<tool_call>{"name":"get_wea', "get_weather", ("get_weather", "")),
    ('<tool_call>{"na', "get_time", ("get_time", "")),
    ("<tool_", "get_weather", ("get_weather", "")),
    ('<tool_call>{"name":"get_wea', None, None),  # required or auto: no name, no call
    ("<tool_", None, None),
    ('<tool_call>{"name":"unknown","arguments":{"a":', None, None),
    ('{"name": "get_time", "parameters": {"tz": "UT', None, ("get_time", '{"tz": "UT')),
])
def test_a_cut_off_call_is_a_call_or_nothing_never_markup(text, named, call) -> None:
    content, calls = split_tool_calls(text, NAMES, named=named)
    assert [(c.name, c.arguments) for c in calls] == ([call] if call else [])
    assert not content if calls else content == ""


def test_text_before_a_cut_off_call_stays_content() -> None:
    assert split_tool_calls('Sure. <tool_call>{"name":"get_wea', NAMES) == ("Sure.", [])
    content, calls = split_tool_calls("Sure. " + CALL[:-15], NAMES)
    assert content == "Sure." and calls[0].arguments == '{"city":"Paris'


def test_a_cut_off_bare_json_answer_that_is_no_call_stays_content() -> None:
    for text in ('{"name": "unknown", "parameters": {"a": ', '{"answer": 4'):
        assert split_tool_calls(text, NAMES) == (text, [])


def test_a_cut_off_second_call_is_dropped_when_parallel_is_false() -> None:
    text = CALL + CALL[:-15]
    assert len(split_tool_calls(text, NAMES)[1]) == 2
    assert len(split_tool_calls(text, NAMES, parallel=False)[1]) == 1


def _chunks(text: str, size: int) -> list[Chunk]:
    pieces = [text[i:i + size] for i in range(0, len(text), size)]
    return [Chunk("r", i, 0, p, [1], finish_reason="length" if i == len(pieces) - 1 else None)
            for i, p in enumerate(pieces)]


@pytest.mark.parametrize("size", [1, 3, 1000])
@pytest.mark.parametrize(("text", "named"), [
    ("Sure. " + CALL + CALL[:-15], None), ('<tool_call>{"name":"get_w', "get_weather")])
def test_the_stream_says_what_the_gathered_answer_says(size, text, named) -> None:
    gather = Gather(1, False, NAMES, named_tool=named)
    shape = StreamShape("chat", "r", 0, "m", False, NAMES, named_tool=named)
    deltas, reasons = [], []
    for c in _chunks(text, size):
        gather.add(c)
        for p in shape.payloads(c):
            deltas.append(p["choices"][0]["delta"])
            reasons.append(p["choices"][0]["finish_reason"])
    whole = gather.chat("r", 0, "m")["choices"][0]
    assert whole["finish_reason"] == "length" and [r for r in reasons if r] == ["length"]
    assert "".join(d.get("content") or "" for d in deltas) == (whole["message"]["content"] or "")
    streamed: dict[int, dict] = {}
    for tc in (tc for d in deltas for tc in d.get("tool_calls") or []):
        if "id" in tc:  # id and name first, then the arguments
            streamed[tc["index"]] = {"id": tc["id"], "type": "function", "function": dict(
                tc["function"])}
        else:
            streamed[tc["index"]]["function"]["arguments"] += tc["function"]["arguments"]
    calls = whole["message"]["tool_calls"]
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in streamed.values()] \
        == [(c["function"]["name"], c["function"]["arguments"]) for c in calls]
    assert all("<tool" not in json.dumps(d) for d in deltas)


@pytest.mark.parametrize(("text", "named", "content"), [
    ("if a <", None, "if a <"),  # a free answer may end in "<": it stays
    ("if a <t", None, "if a"),  # the tag begun: cut off, dropped
    ("<", "get_weather", None),  # a forced call: even "<" is the tag
])
def test_an_answer_ending_in_part_of_the_tag(text, named, content) -> None:
    got, calls = split_tool_calls(text, NAMES, named=named)
    assert got == content
    assert [c.name for c in calls] == (["get_weather"] if named else [])
