"""Background Responses (`background: true`): answered `in_progress` at once, generated on past
the HTTP request and stored as they end; cancelled from any gateway process, which stops the
generation at its worker; failed, not left in progress, when their gateway shuts down."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import MODEL, Mesh, start_gateway
from tests.integration.helpers import call, wait_until
from tests.integration.responses_gateway import responses_gateway
from tests.integration.test_cancel import serving_worker

# 300 numbers asked of the grammar, 900 tokens allowed: a generation of tens of seconds on
# the test workers, never over before the test cancels it
NUMBERS = {"type": "json_schema", "name": "numbers", "schema": {
    "type": "object", "required": ["n"], "properties": {
        "n": {"type": "array", "items": {"type": "integer"}, "minItems": 300}}}}
LONG = {"model": MODEL, "input": "List numbers.", "max_output_tokens": 900, "temperature": 0,
        "text": {"format": NUMBERS}, "background": True}
SHORT = {"model": MODEL, "input": "Name three colours.", "max_output_tokens": 12,
         "temperature": 0}


@pytest.fixture(scope="module")
def gateways(mesh: Mesh, redis_url: str, logs_dir: Path) -> Iterator[tuple[str, str]]:
    """Two gateway processes on one store: a cancel sent to either reaches the job."""
    with responses_gateway(mesh, redis_url, logs_dir, "background") as first:
        child, second = start_gateway(mesh.nats_url, logs_dir, "gateway-background-2",
                                      result_cache="0")
        try:
            wait_until(lambda: call("GET", second + "/ready")[0] == 200, "the gateway is ready")
            yield first, second
        finally:
            child.stop()


def _client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=60)


def _status(base: str, rid: str) -> str:
    status, body, _ = call("GET", f"{base}/v1/responses/{rid}")
    assert status == 200, body
    return str(body["status"])


def _generated_tokens(base: str) -> float:
    with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == "kvmesh_gateway_generation_tokens_total"
               and s.labels.get("model") == MODEL)


def test_a_background_response_is_answered_in_progress_and_stored_when_done(
        gateways: tuple[str, str]) -> None:
    first, _ = gateways
    client = _client(first)
    tokens_before = _generated_tokens(first)
    made = client.responses.create(**SHORT, background=True)
    assert made.status == "in_progress" and made.background is True and made.output == []
    wait_until(lambda: _status(first, made.id) != "in_progress", "the response finishes")
    done = client.responses.retrieve(made.id)
    alone = client.responses.create(**SHORT, store=False)
    assert done.status == alone.status and done.background is True
    assert done.output_text == alone.output_text and done.output_text
    assert done.usage is not None and done.usage.output_tokens == alone.usage.output_tokens
    # its tokens count once it ends, though its HTTP request ended before
    wait_until(lambda: _generated_tokens(first) >= tokens_before + 2 * done.usage.output_tokens,
               "the background response's tokens are counted")
    again = client.responses.cancel(made.id)  # a finished one: as it finished
    assert again.status == done.status and again.output_text == done.output_text


@pytest.mark.parametrize("where", ["its own gateway", "another gateway"])
def test_a_cancel_stops_the_generation_wherever_it_runs(mesh: Mesh, gateways: tuple[str, str],
                                                         where: str) -> None:
    first, second = gateways
    status, made, _ = call("POST", first + "/v1/responses", LONG)
    assert status == 200 and made["status"] == "in_progress", made
    worker = serving_worker(mesh)
    status, cancelled, _ = call("POST", f"{first if where == 'its own gateway' else second}"
                                f"/v1/responses/{made['id']}/cancel", {})
    assert status == 200 and cancelled["status"] == "cancelled", cancelled
    assert cancelled["id"] == made["id"] and cancelled["error"] is None
    assert _status(first, made["id"]) == "cancelled"
    wait_until(lambda: mesh.stats(worker).running == 0, "the worker stops the generation")
    status, again, _ = call("POST", f"{second}/v1/responses/{made['id']}/cancel", {})
    assert status == 200 and again["status"] == "cancelled", again  # idempotent


def test_a_background_response_fails_when_its_gateway_shuts_down(
        mesh: Mesh, gateways: tuple[str, str], logs_dir: Path) -> None:
    first, _ = gateways
    child, base = start_gateway(mesh.nats_url, logs_dir, "gateway-background-3",
                                result_cache="0", grace_period="1")
    try:
        wait_until(lambda: call("GET", base + "/ready")[0] == 200, "the gateway is ready")
        status, made, _ = call("POST", base + "/v1/responses", LONG)
        assert status == 200 and made["status"] == "in_progress", made
        worker = serving_worker(mesh)
        assert child.stop(timeout=20) == 0
    finally:
        child.stop()
    status, ended, _ = call("GET", f"{first}/v1/responses/{made['id']}")
    assert status == 200 and ended["status"] == "failed", ended
    assert "shutting down" in ended["error"]["message"], ended
    wait_until(lambda: mesh.stats(worker).running == 0, "the worker stops the generation")


@pytest.mark.parametrize(("extra", "param"), [
    ({"store": False}, "background"),
    ({"stream": True}, "stream"),
    ({"background": 1}, "background"),
])
def test_what_a_background_response_cannot_be_is_400_naming_it(
        gateways: tuple[str, str], extra: dict[str, Any], param: str) -> None:
    status, body, _ = call("POST", gateways[0] + "/v1/responses",
                           {**SHORT, "background": True, **extra})
    assert status == 400 and body["error"]["param"] == param, body
