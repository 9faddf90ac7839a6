"""SIGTERM drains a worker: the request it is streaming completes, it takes no new work (a new
request goes to the other worker), and it exits within its grace period.

Runs on a private mesh (two workers) so the session mesh keeps both of its workers."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import MODEL, Mesh
from tests.integration.helpers import open_stream, post, sse_events
from tests.integration.private_mesh import private_mesh, start_worker
from tests.integration.test_cancel import serving_worker

GRACE = 30.0  # the workers' grace period, seconds


@pytest.fixture(scope="module")
def drain_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    logs: Path = tmp_path_factory.mktemp("drain-mesh")
    with private_mesh(logs, workers=("a", "b"), grace_period=GRACE) as (m, _nats):
        yield m


def test_sigterm_finishes_inflight_stream_and_exits(drain_mesh: Mesh) -> None:
    m = drain_mesh
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me a story."}],
            "max_tokens": 96, "temperature": 0, "ignore_eos": True,
            "stream_options": {"include_usage": True}}
    resp = open_stream(m.base_url + "/v1/chat/completions", body)
    events = sse_events(resp)
    head = [next(events) for _ in range(3)]
    victim = serving_worker(m)
    survivor = next(w for w in m.workers if w != victim)
    child = m.workers[victim]
    os.kill(child.proc.pid, signal.SIGTERM)
    signalled_at = time.monotonic()

    # It stops taking work: a new request, sent while the stream is still running there,
    # is served by the other worker (or refused with a clean 503, never a hang or a 5xx).
    deadline = time.monotonic() + 10
    while not m.stats(victim).draining:  # the signal has been handled
        assert time.monotonic() < deadline, "the worker never started draining"
        time.sleep(0.05)
    status, answer, headers = post(m.base_url + "/v1/chat/completions", {
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        timeout=30)
    assert child.alive, "the victim should still be draining its stream"
    if status == 200:
        assert answer["choices"][0]["finish_reason"]
        served_by = {k.lower(): v for k, v in headers.items()}.get("x-kvmesh-worker")
        if served_by is not None:
            assert served_by == survivor
    else:
        assert status == 503, answer
        assert answer["error"]["message"]
    assert m.stats(victim).draining

    # The in-flight stream completes normally: every token, a finish_reason, no error.
    rest = list(events)
    assert rest[-1] == "[DONE]"
    payloads = [json.loads(e) for e in [*head, *rest[:-1]]]
    assert not [p for p in payloads if "error" in p], payloads[-3:]
    finishes = [c["finish_reason"] for p in payloads for c in p.get("choices", [])
                if c.get("finish_reason")]
    assert finishes == ["length"]
    usage = [p["usage"] for p in payloads if p.get("usage")]
    assert usage and usage[-1]["completion_tokens"] == 96

    # And the worker exits on its own, within its grace period, with status 0.
    code = child.proc.wait(timeout=GRACE + 5)
    elapsed = time.monotonic() - signalled_at
    assert code == 0, f"worker exited with {code}; see {m.logs / (victim + '.log')}"
    assert elapsed < GRACE, elapsed

    # The mesh still serves on the survivor.
    status, answer, _ = post(m.base_url + "/v1/chat/completions", {
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
    assert status == 200, answer


def test_idle_worker_exits_at_once_and_grace_expiry_fails_the_stream_cleanly(
        drain_mesh: Mesh) -> None:
    """An idle worker exits right away on SIGTERM. A stream longer than the grace period gets
    a 503 `draining` error event and [DONE] when the grace runs out: nothing hangs."""
    m = drain_mesh
    for wid, child in list(m.workers.items()):
        if child.alive:
            started = time.monotonic()
            os.kill(child.proc.pid, signal.SIGTERM)
            assert child.proc.wait(timeout=10) == 0
            assert time.monotonic() - started < 5
        m.workers.pop(wid)
    short_grace = 2.0
    start_worker(m, "c", grace_period=short_grace)
    m.wait_ready(1)

    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 900,
            "temperature": 0, "ignore_eos": True}
    resp = open_stream(m.base_url + "/v1/completions", body)
    events = sse_events(resp)
    for _ in range(3):
        next(events)
    child = m.workers["c"]
    os.kill(child.proc.pid, signal.SIGTERM)
    signalled_at = time.monotonic()
    rest = list(events)
    assert time.monotonic() - signalled_at < short_grace + 5
    assert rest[-1] == "[DONE]"
    errors = [json.loads(e)["error"] for e in rest[:-1] if e.startswith('{"error"')]
    assert errors and errors[-1]["code"] == "draining", rest[-3:]
    assert child.proc.wait(timeout=10) == 0
