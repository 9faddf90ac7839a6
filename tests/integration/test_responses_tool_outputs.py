"""A continuation of a response that called a function must carry that call's output, and
every `function_call_output` must answer a call made before it (in this input or the stored
history): else 400 on `input`, in OpenAI's words (gateway/responses_calls.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import MODEL, Mesh
from tests.integration.helpers import call
from tests.integration.responses_gateway import responses_gateway

TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather of a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                         "required": ["city"]}}]
ASK = {"model": MODEL, "tools": TOOLS, "temperature": 0, "max_output_tokens": 64}


@pytest.fixture(scope="module")
def base(mesh: Mesh, redis_url: str, logs_dir: Path) -> Iterator[str]:
    with responses_gateway(mesh, redis_url, logs_dir, "tool-outputs") as url:
        yield url


def _create(base: str, **body: Any) -> tuple[int, dict[str, Any]]:
    status, got, _ = call("POST", base + "/v1/responses", {**ASK, **body})
    return status, got


def _refused(base: str, message: str, **body: Any) -> None:
    status, got = _create(base, **body)
    assert status == 400 and got["error"]["param"] == "input", got
    assert got["error"]["message"].endswith(message), got


def test_a_continuation_pairs_its_outputs_with_the_stored_calls(base: str) -> None:
    status, called = _create(base, input="Weather in Paris?",
                             tool_choice={"type": "function", "name": "get_weather"})
    assert status == 200, called
    (fc,) = [o for o in called["output"] if o["type"] == "function_call"]
    after = {"previous_response_id": called["id"]}
    _refused(base, "No tool call found for function call output with call_id call_unknown.",
             input=[{"type": "function_call_output", "call_id": "call_unknown",
                     "output": "sunny"}], **after)
    _refused(base, f"No tool output found for function call {fc['call_id']}.",
             input="And tomorrow?", **after)
    answered = [{"type": "function_call_output", "call_id": fc["call_id"], "output": "sunny"}]
    _refused(base, f"No tool call found for function call output with call_id "
             f"{fc['call_id']}.", input=answered)  # no history: nothing called it
    status, got = _create(base, input=answered, **after)
    assert status == 200 and got["status"] in ("completed", "incomplete"), got


def test_an_agent_sdks_shapes_are_served(base: str) -> None:
    """What the OpenAI Agents SDK sends: `tools: []` and `include: []` for an agent without
    tools, and a tool's structured result as `input_text` parts; `input_items` keeps them."""
    status, plain = _create(base, input="Hi", tools=[], include=[], tool_choice="auto")
    assert status == 200 and plain["tools"] == [], plain
    status, called = _create(base, input="Weather in Paris?",
                             tool_choice={"type": "function", "name": "get_weather"})
    (fc,) = [o for o in called["output"] if o["type"] == "function_call"]
    parts = [{"type": "input_text", "text": "22"}, {"type": "input_text", "text": "C"}]
    status, got = _create(base, previous_response_id=called["id"], input=[
        {"type": "function_call_output", "call_id": fc["call_id"], "output": parts}])
    assert status == 200, got
    status, items, _ = call("GET", f"{base}/v1/responses/{got['id']}/input_items")
    assert status == 200 and items["data"][0]["output"] == parts, items
