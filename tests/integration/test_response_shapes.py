"""Response shapes as openai-python declares them, through the whole mesh: usage always has
`prompt_tokens_details.cached_tokens`; every Response object (created, streamed, retrieved)
validates with `openai.types.responses.Response`.

The module adds to the session mesh a cache actor (the responses store, on the session's
Redis) and a gateway of its own without the result cache, so every answer is generated."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI
from openai.types.responses import Response

from kvmesh.cli import procs
from tests.integration.conftest import MODEL, Mesh, start_gateway
from tests.integration.helpers import call, open_stream, sse_events

PARIS = [{"role": "user", "content": "Weather in Paris?"}]


@pytest.fixture(scope="module")
def base(mesh: Mesh, redis_url: str, logs_dir: Path) -> Iterator[str]:
    store = procs.start("cache-shapes", procs.service_argv("cache"), env={
        "KVMESH_NATS_URL": mesh.nats_url, "KVMESH_CACHE_METRICS_PORT": "0",
        "KVMESH_CACHE_REDIS_URL": redis_url}, log=open(logs_dir / "cache-shapes.log", "ab"))  # noqa: SIM115
    gateway, url = start_gateway(mesh.nats_url, logs_dir, "gateway-shapes", result_cache="0")
    try:
        _wait(lambda: call("GET", url + "/ready")[0] == 200, "the gateway is ready")
        _wait(lambda: call("GET", url + "/v1/responses/resp_" + "0" * 32)[0] == 404,
              "the responses store answers")
        yield url
    finally:
        gateway.stop()
        store.stop()


def _wait(ok: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g}s"
        time.sleep(0.2)


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
