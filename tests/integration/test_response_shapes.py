"""Response shapes as openai-python declares them, through the whole mesh: usage always has
`prompt_tokens_details.cached_tokens`; every Response object (created, streamed, retrieved)
validates with `openai.types.responses.Response`; a forced tool call cut off by max_tokens is a
tool call (`finish_reason` `length`, a `function_call` item), never `<tool_call>` markup.

The module adds to the session mesh a responses store and a gateway of its own without the
result cache, so every answer is generated (tests/integration/responses_gateway.py)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI
from openai.types.responses import Response

from tests.integration.conftest import MODEL, Mesh
from tests.integration.helpers import call, open_stream, post, sse_events
from tests.integration.responses_gateway import responses_gateway

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}}, "required": ["city"]}}}
PARIS = [{"role": "user", "content": "Weather in Paris?"}]
FORCED = {"model": MODEL, "messages": PARIS, "tools": [WEATHER], "temperature": 0,
          "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}


@pytest.fixture(scope="module")
def base(mesh: Mesh, redis_url: str, logs_dir: Path) -> Iterator[str]:
    with responses_gateway(mesh, redis_url, logs_dir, "shapes") as url:
        yield url


def _streamed(url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    with open_stream(url, body) as resp:
        return [json.loads(e) for e in sse_events(resp) if e != "[DONE]"]


# -- usage -----------------------------------------------------------------------------------


def test_usage_always_has_prompt_tokens_details(base: str) -> None:
    """A prompt that starts with a fresh nonce matches no cached block: 0 cached tokens, said."""
    client = OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=60)
    system = [{"role": "system", "content": uuid.uuid4().hex + " Be brief."}]
    chat = client.chat.completions.create(model=MODEL, messages=system + PARIS, max_tokens=2)
    assert chat.usage.prompt_tokens_details.cached_tokens == 0
    text = client.completions.create(model=MODEL, prompt=uuid.uuid4().hex, max_tokens=2)
    assert text.usage.prompt_tokens_details.cached_tokens == 0
    streamed = list(client.chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": uuid.uuid4().hex}, *PARIS],
        max_tokens=2, stream=True, stream_options={"include_usage": True}))
    assert streamed[-1].usage.prompt_tokens_details.cached_tokens == 0


# -- Response objects ------------------------------------------------------------------------


def test_every_response_object_validates(base: str) -> None:
    body = {"model": MODEL, "input": "Name a colour.", "max_output_tokens": 6,
            "temperature": 0}
    status, created, _ = call("POST", base + "/v1/responses", body)
    assert status == 200, created
    made = Response.model_validate(created)
    assert made.usage.input_tokens_details.cache_write_tokens == 0
    assert made.usage.output_tokens_details.reasoning_tokens == 0
    events = _streamed(base + "/v1/responses", body)
    bodies = [e["response"] for e in events if "response" in e]
    assert events[-1]["type"] == "response.incomplete" and len(bodies) == 3
    for got in bodies:
        Response.model_validate(got)
    for rid in (made.id, bodies[-1]["id"]):
        status, stored, _ = call("GET", base + "/v1/responses/" + rid)
        assert status == 200 and Response.model_validate(stored).id == rid


# -- a forced tool call cut off by max_tokens ------------------------------------------------


def _squeezed(arguments: str) -> str:
    """Arguments without spaces: a whole call's are re-serialised, a cut-off one's are not."""
    return arguments.replace(" ", "")


@pytest.mark.parametrize("max_tokens", [3, 12, 18])
def test_a_cut_off_forced_call_is_a_tool_call(base: str, max_tokens: int) -> None:
    """3 tokens do not write the call's name, 12 do, 18 some arguments: either way the named
    function is called with the arguments written so far, and the answer says `length`."""
    whole = post(base + "/v1/chat/completions", {**FORCED, "max_tokens": 120})[1]
    full = whole["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    body = {**FORCED, "max_tokens": max_tokens}
    status, got, _ = post(base + "/v1/chat/completions", body)
    assert status == 200, got
    choice = got["choices"][0]
    assert choice["finish_reason"] == "length" and choice["message"]["content"] is None, choice
    (tc,) = choice["message"]["tool_calls"]
    assert tc["function"]["name"] == "get_weather" and tc["type"] == "function"
    arguments = tc["function"]["arguments"]
    assert _squeezed(full).startswith(_squeezed(arguments)) and len(arguments) < len(full)
    assert (arguments != "") is (max_tokens == 18)
    events = _streamed(base + "/v1/chat/completions", body)
    deltas = [c["delta"] for e in events for c in e["choices"]]
    assert "<tool_call>" not in json.dumps(deltas)
    calls = [t for d in deltas for t in d.get("tool_calls") or []]
    assert calls[0]["function"]["name"] == "get_weather" and "id" in calls[0]
    assert "".join(t["function"]["arguments"] for t in calls) == arguments
    assert [c["finish_reason"] for e in events for c in e["choices"]
            if c["finish_reason"]] == ["length"]


def test_a_cut_off_call_under_auto_is_partial_or_dropped(base: str) -> None:
    """A regex makes the model write a call: cut off inside its name (6 tokens) it is dropped,
    after it (21 tokens) it is a call with the arguments written so far; no markup either
    way."""
    regex = r'<tool_call>\{"name": "get_weather", "arguments": \{"city": "Paris"\}\}</tool_call>'
    body = {"model": MODEL, "messages": PARIS, "tools": [WEATHER], "tool_choice": "auto",
            "temperature": 0, "guided_regex": regex}
    cut = [post(base + "/v1/chat/completions", {**body, "max_tokens": n})[1]["choices"][0]
           for n in (6, 21)]
    assert [c["finish_reason"] for c in cut] == ["length", "length"], cut
    assert cut[0]["message"] == {"role": "assistant", "content": ""}
    (tc,) = cut[1]["message"]["tool_calls"]
    assert tc["function"]["name"] == "get_weather" and cut[1]["message"]["content"] is None
    assert '{"city": "Paris"}'.startswith(tc["function"]["arguments"])
    assert tc["function"]["arguments"] != '{"city": "Paris"}'


def test_a_cut_off_forced_call_is_a_function_call_item(base: str) -> None:
    body = {"model": MODEL, "input": "Weather in Paris?", "max_output_tokens": 12,
            "temperature": 0, "tools": [{"type": "function", **WEATHER["function"]}],
            "tool_choice": {"type": "function", "name": "get_weather"}}
    status, got, _ = call("POST", base + "/v1/responses", body)
    assert status == 200, got
    made = Response.model_validate(got)
    assert made.status == "incomplete"
    (item,) = made.output
    assert item.type == "function_call" and item.name == "get_weather"
    assert item.status == "incomplete"
    events = _streamed(base + "/v1/responses", body)
    assert "<tool_call>" not in json.dumps(events)
    last = Response.model_validate(events[-1]["response"])
    assert [o.type for o in last.output] == ["function_call"]
    assert last.output[0].arguments == item.arguments
    assert [e["arguments"] for e in events
            if e["type"] == "response.function_call_arguments.done"] == [item.arguments]
