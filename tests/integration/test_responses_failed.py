"""A Response whose worker's engine dies mid-way, on a private mesh (it kills two workers):
the streamed `response.failed` carries an `error` that openai-python's `ResponseError`
accepts (OpenAI's code, kvmesh's own in the message), and the stored copy a retrieve reads
afterwards carries the same one; a non-streamed request's stored copy says what its client
was told (the 502) the same way."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

from openai.types.responses import Response, ResponseError

from kvmesh.cli import procs
from tests.integration.conftest import MODEL, Mesh
from tests.integration.helpers import call, engine_pid, open_stream, post, wait_until
from tests.integration.private_mesh import private_mesh
from tests.integration.test_cancel import serving_worker

# a schema whose grammar asks for 300 numbers: an answer long enough to be killed mid-way
NUMBERS = {"type": "json_schema", "name": "numbers", "schema": {
    "type": "object", "required": ["n"], "properties": {
        "n": {"type": "array", "items": {"type": "integer"}, "minItems": 300}}}}
BODY = {"model": MODEL, "input": "List numbers.", "max_output_tokens": 900, "temperature": 0,
        "text": {"format": NUMBERS}}



def _kill_serving_engine(m: Mesh) -> None:
    """Kill the engine of the worker running the request; the worker then exits."""
    os.kill(engine_pid(m.workers[serving_worker(m)].proc.pid), signal.SIGKILL)


def _stored(base: str, rid: str) -> dict[str, Any]:
    status, body, _ = call("GET", base + "/v1/responses/" + rid)
    assert status == 200, body
    return body


def _streamed_failure(m: Mesh) -> list[dict[str, Any]]:
    """The events of a streamed response whose engine is killed after its first text."""
    events = []
    with open_stream(m.base_url + "/v1/responses", BODY) as resp:
        for raw in resp:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            events.append(json.loads(line[len("data: "):]))
            if events[-1]["type"] == "response.output_text.delta" and len(events) == 5:
                _kill_serving_engine(m)
    return events


def _gathered_failure(m: Mesh) -> tuple[int, dict[str, Any], str]:
    """(status, body, response id) of a plain request whose engine is killed once it has
    made tokens."""
    answer: list[tuple[int, dict[str, Any], dict[str, str]]] = []
    asker = threading.Thread(target=lambda: answer.append(post(m.base_url + "/v1/responses",
                                                               BODY)))
    asker.start()
    wid = serving_worker(m)
    # the answer has grown two blocks (32 tokens), so its first deltas reached the gateway
    # steps ago: a death now is not routed again
    start = m.stats(wid).used_blocks
    wait_until(lambda: m.stats(wid).used_blocks >= start + 2, "the answer grows two blocks")
    _kill_serving_engine(m)
    asker.join(60)
    status, body, headers = answer[0]
    return status, body, {k.lower(): v for k, v in headers.items()}["x-request-id"]


def test_a_failed_response_is_stored_with_the_error_it_told(tmp_path: Path,
                                                             redis_url: str) -> None:
    with private_mesh(tmp_path, workers=("a", "b")) as (m, _):
        store = procs.start("cache", procs.service_argv("cache"), env={
            "KVMESH_NATS_URL": m.nats_url, "KVMESH_CACHE_METRICS_PORT": "0",
            "KVMESH_CACHE_REDIS_URL": redis_url}, log=open(tmp_path / "cache.log", "ab"))  # noqa: SIM115
        try:
            wait_until(lambda: call("GET", m.base_url + "/v1/responses/resp_" + "0" * 32)[0] == 404,
                  "the responses store answers")
            events = _streamed_failure(m)
            assert [e["type"] for e in events[-2:]] == ["error", "response.failed"], events[-3:]
            assert events[-2]["code"] == "worker_died"  # the error event keeps kvmesh's code
            failed = Response.model_validate(events[-1]["response"])
            assert failed.status == "failed" and failed.error.code == "server_error"
            assert "worker_died" in failed.error.message
            stored = _stored(m.base_url, failed.id)
            assert stored == events[-1]["response"]  # stored before it was streamed
            wait_until(lambda: len(m.live_worker_ids()) == 1, "the killed worker exits")

            status, told, rid = _gathered_failure(m)
            assert status == 502 and told["error"]["code"] == "worker_died", told
            wait_until(lambda: _stored(m.base_url, rid)["status"] == "failed", "stored as failed")
            error = ResponseError.model_validate(_stored(m.base_url, rid)["error"])
            assert error.code == "server_error" and told["error"]["message"] in error.message
        finally:
            store.stop()
