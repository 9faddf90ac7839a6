"""Tenant limits that hold under faults and concurrency (issue 13, items 1 and 5), through a
real gateway, auth actor and Redis with the scripted backend (fake_mesh.py):
- a client that resets its connection mid-admission or mid-stream leaks no concurrency slot;
- a request that ends while Redis is paused frees its slot once Redis is back, not after
  the slot's lease;
- token budgets are reserved at admission, so parallel requests cannot overshoot `tpm`."""

from __future__ import annotations

import json
import random
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis

from tests.faults.fake_backend import FAKE_MODEL, SLOW_CHUNKS
from tests.faults.fake_mesh import FakeMesh, new_key
from tests.integration.helpers import call, open_stream, sse_events

CHAT = "/v1/chat/completions"


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": FAKE_MODEL, "messages": [{"role": "user", "content": text}],
            "max_tokens": 4, **extra}


def _send_then_reset(url: str, key: str, body: dict[str, Any], delay: float) -> None:
    """Send a whole request, then reset the connection (RST, not FIN) after `delay` s."""
    host, port = url.removeprefix("http://").split(":")
    raw = json.dumps(body).encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (CHAT.encode(), key.encode(), len(raw), raw))
        time.sleep(delay)  # fault injection: spread the resets over admission and streaming


def _all_admitted(m: FakeMesh, key: str, n: int) -> bool:
    """Do `n` parallel requests of `key` all pass admission?"""
    with ThreadPoolExecutor(n) as pool:
        statuses = list(pool.map(lambda _: call("POST", m.auth_url + CHAT, chat("fake:slow"),
                                                key)[0], range(n)))
    return statuses == [200] * n


def test_clients_that_reset_right_after_sending_leak_no_concurrency_slot(
        fmesh: FakeMesh) -> None:
    key = new_key(fmesh, max_concurrency=5)
    rng = random.Random(13)
    with ThreadPoolExecutor(20) as pool:
        list(pool.map(lambda i: _send_then_reset(
            fmesh.auth_url, key, chat("fake:slow", stream=bool(i % 2)), rng.random() * 0.05),
            range(20)))
    deadline = time.monotonic() + 10  # far inside the 30 s lease: only releases free slots
    while not _all_admitted(fmesh, key, 5):
        assert time.monotonic() < deadline, "reset clients leaked concurrency slots"


def test_requests_ending_while_redis_is_paused_free_their_slots_when_it_is_back(
        fmesh: FakeMesh) -> None:
    key = new_key(fmesh, max_concurrency=2)
    streams = [open_stream(fmesh.auth_url + CHAT, chat("fake:slow"), key=key) for _ in range(2)]
    events = [sse_events(s) for s in streams]
    for e in events:
        next(e)  # both in flight, both slots taken
    assert call("POST", fmesh.auth_url + CHAT, chat("hi"), key)[0] == 429
    r = redis.Redis(port=fmesh.redis_port)
    r.execute_command("CLIENT", "PAUSE", 4000, "ALL")  # the streams end while it sleeps
    paused = time.monotonic()
    for e in events:
        assert list(e)[-1] == "[DONE]"
    for s in streams:
        s.close()
    assert time.monotonic() - paused < 4, "the streams should have ended during the pause"
    deadline = paused + 4 + 8  # well before the 30 s lease would free them
    while not _all_admitted(fmesh, key, 2):
        assert time.monotonic() < deadline, "the slots were not released after Redis came back"
        time.sleep(0.2)
    r.close()


def test_ten_parallel_requests_cannot_overshoot_a_small_tpm(fmesh: FakeMesh) -> None:
    """tpm=100; each request may use its prompt plus 40 tokens, so at most two fit at once.
    Before reservations every one of them was admitted (the bucket was above zero)."""
    key = new_key(fmesh, tpm=100)
    body = chat("fake:slow", max_tokens=40)
    with ThreadPoolExecutor(10) as pool:
        replies = list(pool.map(lambda _: call("POST", fmesh.auth_url + CHAT, body, key),
                                range(10)))
    served = [b for s, b, _ in replies if s == 200]
    refused = [b for s, b, _ in replies if s == 429]
    assert len(served) + len(refused) == 10
    assert 1 <= len(served) <= 2, [s for s, _, _ in replies]
    assert all("tokens" in b["error"]["message"] for b in refused)
    assert sum(b["usage"]["total_tokens"] for b in served) <= 100
    assert all(b["usage"]["completion_tokens"] == SLOW_CHUNKS for b in served)
