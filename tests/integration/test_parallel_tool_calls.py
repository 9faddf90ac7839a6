"""`parallel_tool_calls: false` under `tool_choice: "auto"`, through the whole mesh: a regex
drives the real SmolLM2 to write two calls, and the answer holds only the first, streamed or
not (the audit's D7 request)."""

from __future__ import annotations

import json
from typing import Any

from tests.integration.conftest import MODEL
from tests.integration.helpers import open_stream, post, sse_events

F = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
G = {"type": "function", "function": {"name": "g", "parameters": {"type": "object"}}}
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Call f and g."}],
        "tools": [F, G], "tool_choice": "auto", "temperature": 0, "max_tokens": 60,
        "guided_regex": r'<tool_call>\{"name": "f", "arguments": \{\}\}</tool_call>\n'
                        r'<tool_call>\{"name": "g", "arguments": \{\}\}</tool_call>'}


def _calls(mesh: Any, **extra: Any) -> list[str]:
    status, got, _ = post(mesh.base_url + "/v1/chat/completions", {**BODY, **extra})
    assert status == 200, got
    assert got["choices"][0]["finish_reason"] == "tool_calls"
    return [c["function"]["name"] for c in got["choices"][0]["message"]["tool_calls"]]


def _streamed_calls(mesh: Any) -> list[dict[str, Any]]:
    """Every tool-call delta of the streamed answer, in order."""
    resp = open_stream(mesh.base_url + "/v1/chat/completions",
                       {**BODY, "parallel_tool_calls": False})
    deltas = []
    with resp:
        for data in sse_events(resp):
            if data != "[DONE]":
                for choice in json.loads(data)["choices"]:
                    deltas += choice["delta"].get("tool_calls") or []
    return deltas


def test_the_regex_writes_two_calls_which_parallel_calls_keep(mesh) -> None:
    assert _calls(mesh) == ["f", "g"]


def test_parallel_false_answers_only_the_first_call(mesh) -> None:
    assert _calls(mesh, parallel_tool_calls=False) == ["f"]


def test_parallel_false_streams_no_delta_of_a_second_call(mesh) -> None:
    deltas = _streamed_calls(mesh)
    assert deltas and {d["index"] for d in deltas} == {0}
    assert [d["function"]["name"] for d in deltas if "id" in d] == ["f"]
