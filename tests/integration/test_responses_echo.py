"""A Response echoes the request as OpenAI's does, created, streamed and retrieved:
`parallel_tool_calls`, `prompt_cache_key`, `prompt_cache_retention`, `max_tool_calls` and
`safety_identifier` as sent (tools or not),
`service_tier` `default`, `text.verbosity` `medium`, `tool_choice` `auto` unless sent; each
validates as openai-python's `Response`. A field that could not echo so is a 400 naming it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai.types.responses import Response

from tests.integration.conftest import MODEL, Mesh
from tests.integration.helpers import call, open_stream, sse_events
from tests.integration.responses_gateway import responses_gateway

SENT = {"model": MODEL, "input": "Name a colour.", "max_output_tokens": 4, "temperature": 0,
        "parallel_tool_calls": False, "prompt_cache_key": "colours", "safety_identifier": "u-1",
        "service_tier": "auto", "text": {"verbosity": "medium"}, "max_tool_calls": 2,
        "prompt_cache_retention": "in_memory"}
ECHO = {"parallel_tool_calls": False, "prompt_cache_key": "colours", "safety_identifier": "u-1",
        "service_tier": "default", "tool_choice": "auto", "max_tool_calls": 2,
        "prompt_cache_retention": "in_memory", "background": False,
        "text": {"format": {"type": "text"}, "verbosity": "medium"}}


@pytest.fixture(scope="module")
def base(mesh: Mesh, redis_url: str, logs_dir: Path) -> Iterator[str]:
    with responses_gateway(mesh, redis_url, logs_dir, "echo") as url:
        yield url


def _echoed(body: dict[str, Any]) -> dict[str, Any]:
    Response.model_validate(body)
    return {k: body[k] for k in ECHO}


def test_every_response_object_echoes_the_request(base: str) -> None:
    status, made, _ = call("POST", base + "/v1/responses", SENT)
    assert status == 200 and _echoed(made) == ECHO, made
    with open_stream(base + "/v1/responses", SENT) as resp:
        events = [json.loads(e) for e in sse_events(resp)]
    bodies = [e["response"] for e in events if "response" in e]
    assert len(bodies) == 3 and all(_echoed(b) == ECHO for b in bodies)
    for rid in (made["id"], bodies[-1]["id"]):
        status, stored, _ = call("GET", f"{base}/v1/responses/{rid}")
        assert status == 200 and _echoed(stored) == ECHO, stored


@pytest.mark.parametrize(("extra", "param"), [
    ({"parallel_tool_calls": "yes"}, "parallel_tool_calls"),
    ({"text": {"format": {"type": "json_schema", "schema": {"type": "object"}}}},
     "text.format.name"),
])
def test_a_field_that_could_not_echo_is_400_naming_it(base: str, extra: dict[str, Any],
                                                       param: str) -> None:
    status, got, _ = call("POST", base + "/v1/responses", {**SENT, **extra})
    assert status == 400 and got["error"]["param"] == param, got


def test_cancel_says_only_background_responses_cancel(base: str) -> None:
    """What `client.responses.cancel(id)` gets: OpenAI's refusal for a response that was not
    made in the background (none is, here); an unknown id is 404 as on retrieve."""
    import openai

    client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
    made = client.responses.create(model=MODEL, input="Hi", max_output_tokens=2)
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.cancel(made.id)
    assert "background=true" in err.value.message
    with pytest.raises(openai.NotFoundError):
        client.responses.cancel("resp_" + "0" * 32)
