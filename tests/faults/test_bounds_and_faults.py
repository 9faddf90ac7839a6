"""Faults that need no model, on a mesh whose router and worker are scripted (fake_mesh.py):
every bound fires when its peer goes silent, a client that never reads is dropped without
stalling others, garbage frames on every service subject get an error reply and kill nothing,
and Redis stopping and coming back is survived by auth and the result cache."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kvmesh import wire
from tests.faults.fake_backend import FAKE_MODEL
from tests.faults.fake_mesh import ADMIN_KEY, BOUND_S, FakeMesh, new_key
from tests.faults.garbage import send_garbage
from tests.integration.helpers import call, open_stream, post, sse_events, wait_until

CHAT = "/v1/chat/completions"


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": FAKE_MODEL, "messages": [{"role": "user", "content": text}],
            "max_tokens": 4, **extra}


def assert_openai_error(body: dict[str, Any], code: str | None = None) -> None:
    err = body["error"]
    assert set(err) >= {"message", "type", "param", "code"} and err["message"]
    if code is not None:
        assert err["code"] == code, err


def test_fake_backend_answers(fmesh: FakeMesh) -> None:
    status, body, _ = post(fmesh.open_url + CHAT, chat("hi"))
    assert status == 200, body
    assert body["choices"][0]["message"]["content"] == "Hello!"


def _counted(fmesh: FakeMesh, route: str, status: str) -> float:
    """The open gateway's requests of FAKE_MODEL on `route` counted under `status`."""
    with urllib.request.urlopen(fmesh.open_url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == "kvmesh_gateway_requests_total" and s.labels["route"] == route
               and s.labels["model"] == FAKE_MODEL and s.labels["status"] == status)


@pytest.mark.parametrize("route", [CHAT, "/v1/responses"])
def test_a_stream_that_fails_after_its_200_counts_under_the_errors_status(
        fmesh: FakeMesh, route: str) -> None:
    """A worker dying mid-answer reaches the client as an error event after a 200; the
    gateway's request counter says 502, so error-ratio alerts (`status=~"5.."`) see it."""
    def counts() -> tuple[float, float]:
        return _counted(fmesh, route, "502"), _counted(fmesh, route, "200")
    body = (chat("fake:fail-mid") if route == CHAT else
            {"model": FAKE_MODEL, "input": "fake:fail-mid", "store": False})
    before = counts()
    with open_stream(fmesh.open_url + route, body) as resp:
        assert resp.status == 200
        events = [json.loads(e) for e in sse_events(resp) if e != "[DONE]"]
    last = events[-1]
    if route == CHAT:
        assert last["error"]["code"] == "worker_died", last
    else:  # OpenAI's Responses error codes name no worker: a server_error
        assert last["type"] == "response.failed" and last["response"]["error"], last
    # counted when the handler returns, which may be just after the client read the end
    wait_until(lambda: counts() != before, "the stream is counted")
    after = counts()
    assert (after[0] - before[0], after[1] - before[1]) == (1, 0)


# -- timeouts: each bound fires ---------------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True])
def test_worker_that_accepts_but_never_sends_is_504_within_chunk_timeout_and_cancelled(
        fmesh: FakeMesh, stream: bool) -> None:
    before = set(fmesh.backend.cancelled)
    started = time.monotonic()
    status, body, _ = post(fmesh.open_url + CHAT, chat("fake:silent", stream=stream), timeout=30)
    elapsed = time.monotonic() - started
    assert status == 504, body
    assert_openai_error(body, "worker_timeout")
    assert BOUND_S - 0.1 < elapsed < BOUND_S + 3, elapsed
    deadline = time.monotonic() + 10  # the worker is told to stop: it must not run on
    while fmesh.backend.cancelled == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fmesh.backend.cancelled != before


def test_router_that_never_answers_is_504_within_router_timeout(fmesh: FakeMesh) -> None:
    started = time.monotonic()
    status, body, _ = post(fmesh.open_url + CHAT, chat("fake:no-accept"), timeout=30)
    elapsed = time.monotonic() - started
    assert status == 504, body
    assert_openai_error(body, "router_timeout")
    assert BOUND_S - 0.1 < elapsed < BOUND_S + 3, elapsed


@pytest.mark.parametrize("actor", ["auth", "cache"])
def test_hung_auth_or_cache_actor_is_bounded(fmesh: FakeMesh, actor: str) -> None:
    """A stopped (SIGSTOP) auth actor: 503 `auth_unavailable` within `auth_timeout` (2 s). A
    stopped cache actor: a miss after `cache_lookup_timeout` + `cache_lead_wait` (1.5 s here),
    and the request is served."""
    key = new_key(fmesh) if actor == "auth" else ""
    time.sleep(0.6)  # the new key's identity is no longer cached at the gateway
    child = fmesh.children[actor]
    os.kill(child.proc.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        if actor == "auth":
            status, body, headers = call("POST", fmesh.auth_url + CHAT, chat("hi"), key)
            assert status == 503, body
            assert_openai_error(body, "auth_unavailable")
            assert int(headers["Retry-After"]) >= 1
        else:
            status, body, _ = post(fmesh.open_url + CHAT, chat("hung cache", temperature=0))
            assert status == 200, body
        assert time.monotonic() - started < 2 + 1.5
    finally:
        os.kill(child.proc.pid, signal.SIGCONT)


# -- a client that never reads ----------------------------------------------------------------

def _stalled_stream(url: str) -> socket.socket:
    """A streaming request from a socket with a tiny receive buffer that is never read."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    body = json.dumps(chat("fake:flood", stream=True)).encode()
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                 % (len(body), body))
    return sock


def test_client_that_never_reads_is_dropped_and_others_keep_streaming(fmesh: FakeMesh) -> None:
    """The backend floods 32 MB at a client that reads nothing. The gateway's writes block on
    flow control; past `stream_write_timeout` it drops the connection and cancels the request
    at the worker. Meanwhile other requests on the same gateway are served at once."""
    before = set(fmesh.backend.cancelled)
    sock = _stalled_stream(fmesh.open_url)
    try:
        deadline = time.monotonic() + 10
        while not fmesh.backend.flooding:
            assert time.monotonic() < deadline, "the flood never started"
            time.sleep(0.05)
        for _ in range(5):  # others are not stalled by it
            started = time.monotonic()
            events = list(sse_events(open_stream(fmesh.open_url + CHAT, chat("hi"), timeout=10)))
            assert events[-1] == "[DONE]"
            assert time.monotonic() - started < 1.5
        deadline = time.monotonic() + BOUND_S + 10
        while fmesh.backend.flooding or fmesh.backend.cancelled == before:
            assert time.monotonic() < deadline, "the stalled stream was never dropped"
            time.sleep(0.1)
        sock.settimeout(5)  # the gateway closed (reset) its side
        with pytest.raises(OSError):
            while sock.recv(1 << 16):
                pass
            raise ConnectionResetError("closed cleanly")  # EOF is a drop too
    finally:
        sock.close()
    assert all(fmesh.alive().values()), fmesh.alive()


# -- garbage on every service subject ---------------------------------------------------------

REQUEST_SUBJECTS = [wire.AUTH_VERIFY, wire.AUTH_ADMIT, wire.AUTH_SETTLE, wire.AUTH_RENEW,
                    wire.AUTH_ADMIN,
                    wire.CACHE_GET, wire.CACHE_STATS]
BROADCASTS = [wire.AUTH_REVOKED, wire.HEARTBEAT, wire.CACHE_PUT, wire.CANCEL]


def test_garbage_frames_on_auth_cache_and_broadcast_subjects_get_errors(
        fmesh: FakeMesh) -> None:
    """Router and worker subjects: test_mesh_faults.py (they need the real services)."""
    assert asyncio.run(send_garbage(fmesh.nats_url, REQUEST_SUBJECTS, BROADCASTS)) == []
    time.sleep(0.5)
    assert all(fmesh.alive().values()), fmesh.alive()
    status, body, _ = post(fmesh.open_url + CHAT, chat("hi", temperature=0))
    assert status == 200, body
    status, body, _ = call("GET", fmesh.auth_url + "/admin/tenants", key=ADMIN_KEY)
    assert status == 200, body


# -- Redis stops and comes back ---------------------------------------------------------------

def test_redis_down_fails_auth_closed_with_503_and_everything_recovers(fmesh: FakeMesh) -> None:
    m = fmesh
    limited, free = new_key(m, rpm=1000), new_key(m)
    body = chat("cache me", temperature=0)
    for key in (limited, free):
        assert call("POST", m.auth_url + CHAT, body, key)[0] == 200
    status, _, headers = post(m.open_url + CHAT, body)
    assert status == 200

    m.children["redis"].stop(timeout=2)
    time.sleep(0.6)  # the gateway's cached identities (0.5 s) have expired
    for key in (limited, free):
        started = time.monotonic()
        status, resp, headers = call("POST", m.auth_url + CHAT, body, key, timeout=10)
        assert status == 503, resp
        assert_openai_error(resp, "auth_unavailable")
        assert int(headers["Retry-After"]) >= 1
        assert time.monotonic() - started < 2.5  # auth's redis_timeout, not a hang
    # Without auth, the result cache is a miss and the request is served.
    started = time.monotonic()
    status, resp, headers = post(m.open_url + CHAT, body, timeout=10)
    assert status == 200, resp
    assert time.monotonic() - started < 2.5
    assert all(m.alive().get(n) for n in ("auth", "cache", "gateway-open", "gateway-auth"))

    m.start_redis()  # append-only file: the keys are still there
    deadline = time.monotonic() + 30  # generous: the cache's 0.3 s Redis timeout is tight
    # on a loaded 2-core machine (a CI run once took over 10 s here); recovery is the point
    while call("POST", m.auth_url + CHAT, body, limited, timeout=10)[0] != 200:
        assert time.monotonic() < deadline, "auth did not recover after Redis came back"
        time.sleep(0.2)
    assert call("POST", m.auth_url + CHAT, body, free)[0] == 200
    deadline = time.monotonic() + 30
    while True:  # the cache stores and hits again
        post(m.open_url + CHAT, body)
        _, _, headers = post(m.open_url + CHAT, body)
        if {k.lower(): v for k, v in headers.items()}.get("x-kvmesh-cache") == "hit":
            break
        assert time.monotonic() < deadline, "the result cache did not recover"
        time.sleep(0.5)
