"""A response deleted while it is being generated stays deleted when it finishes, streamed or
not: its finished record replaces only a record still stored (cache/responses_store.py), and
its client still gets the whole answer."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from gateway.mesh_client import GATEWAY_GONE_S
from tests.integration.conftest import MODEL, Mesh, start_gateway
from tests.integration.helpers import call, open_stream, post, sse_events, wait_until
from tests.integration.responses_gateway import responses_gateway

# a schema whose grammar asks for 300 numbers, cut at 160 tokens: seconds of generation on
# the test workers, time enough to delete the response while it is made
NUMBERS = {"type": "json_schema", "name": "numbers", "schema": {
    "type": "object", "required": ["n"], "properties": {
        "n": {"type": "array", "items": {"type": "integer"}, "minItems": 300}}}}
BODY = {"model": MODEL, "input": "List numbers.", "max_output_tokens": 160, "temperature": 0,
        "text": {"format": NUMBERS}}
INDEX = "kvmesh:resp:{t:}:index"  # the store's ids of tenant "" (auth is off), by first put


@pytest.fixture(scope="module")
def base(mesh: Mesh, redis_url: str, logs_dir: Path) -> Iterator[str]:
    with responses_gateway(mesh, redis_url, logs_dir, "delete") as url:
        yield url


def _stored_status(base: str, rid: str) -> str | None:
    status, body, _ = call("GET", f"{base}/v1/responses/{rid}")
    return body["status"] if status == 200 else None


def _delete(base: str, rid: str) -> None:
    status, body, _ = call("DELETE", f"{base}/v1/responses/{rid}")
    assert status == 200 and body == {"id": rid, "object": "response", "deleted": True}, body


def test_a_stream_deleted_mid_way_stays_deleted(base: str) -> None:
    with open_stream(base + "/v1/responses", BODY) as resp:
        events = sse_events(resp)
        rid = json.loads(next(events))["response"]["id"]  # response.created
        assert _stored_status(base, rid) == "in_progress"
        _delete(base, rid)
        rest = [json.loads(e) for e in events]
    assert rest[-1]["type"] == "response.incomplete", rest[-1]  # the client heard it all
    assert _stored_status(base, rid) is None


def test_a_plain_response_deleted_mid_way_stays_deleted(base: str, redis_url: str) -> None:
    """Its client learns the id only from the answer: the test finds it in the store's index."""
    index = redis.Redis.from_url(redis_url, decode_responses=True)
    before = set(index.zrange(INDEX, 0, -1))
    answer: list[tuple[int, dict[str, Any], dict[str, str]]] = []
    asker = threading.Thread(target=lambda: answer.append(post(base + "/v1/responses", BODY)))
    asker.start()

    found: list[str] = []

    def in_progress() -> bool:
        new = [r for r in index.zrange(INDEX, 0, -1) if r not in before]
        if new and _stored_status(base, new[0]) == "in_progress":
            found.append(new[0])
        return bool(found)
    wait_until(in_progress, "the response is stored in progress")
    rid = found[0]
    _delete(base, rid)
    asker.join(60)
    status, body, _ = answer[0]
    assert status == 200 and body["id"] == rid and body["status"] == "incomplete", body
    assert body["completed_at"] is None  # only a completed response has it (OpenAI's)
    assert _stored_status(base, rid) is None


def test_a_response_whose_gateway_crashed_is_failed_not_in_progress_for_good(
        mesh: Mesh, base: str, logs_dir: Path) -> None:
    """Its gateway process killed mid-stream, a stored response is read (from another
    gateway) as `failed` once that process's beats have stopped for `GATEWAY_GONE_S`, and
    cannot be continued."""
    gw, url = start_gateway(mesh.nats_url, logs_dir, "gateway-doomed", result_cache="0")
    try:
        wait_until(lambda: call("GET", url + "/ready")[0] == 200, "the gateway is ready")
        events = sse_events(open_stream(url + "/v1/responses", BODY))
        rid = next(json.loads(e)["response"]["id"] for e in events
                   if json.loads(e)["type"] == "response.created")
        wait_until(lambda: _stored_status(base, rid) == "in_progress",
                   "it is stored in progress")
    finally:
        gw.stop(timeout=0, sig=signal.SIGKILL)
    wait_until(lambda: _stored_status(base, rid) == "failed", "it stays in progress",
               timeout=GATEWAY_GONE_S + 10)
    status, body, _ = call("GET", f"{base}/v1/responses/{rid}")
    assert body["error"]["code"] == "server_error" and "gateway" in body["error"]["message"]
    assert body["completed_at"] is None
    status, body, _ = post(base + "/v1/responses", {**BODY, "previous_response_id": rid})
    assert status == 400 and "failed" in body["error"]["message"]
