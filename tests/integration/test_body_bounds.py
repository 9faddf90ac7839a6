"""A request body is read before its request is admitted, so the tenant's own limits cannot
bound it: a client that sends headers and part of a body, then nothing, is answered 408
`body_timeout` once `body_timeout` passes, and a tenant (here every caller: auth is off)
sending more than `body_reads` bodies to one gateway process at once has the next one
refused 429 `too_many_uploads` at once (gateway/body_reads.py). Before, each such
connection held its buffer for good: 300 of them took a gateway from 66 MB to 413 MB (the
security audit). A gateway of its own on the session mesh, raw sockets."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Mesh, start_gateway

TIMEOUT_S = 5.0  # well above a loaded CI machine's time to answer the third at once


@pytest.fixture(scope="module")
def base(mesh: Mesh, logs_dir: Path) -> Iterator[str]:
    gateway, url = start_gateway(mesh.nats_url, logs_dir, "gateway-bodies",
                                 body_timeout=str(TIMEOUT_S), body_reads="2")
    try:
        yield url
    finally:
        gateway.stop()


def _stalled(url: str, sent: bytes = b'{"model": "m", "prompt') -> socket.socket:
    """A connection whose POST says 1,000 more bytes than it sends."""
    host, port = url.removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)), timeout=30)
    conn.sendall(b"POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(sent) + 1000, sent))
    return conn


def _answer(conn: socket.socket) -> tuple[int, dict]:
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), json.loads(body[:_length(data)])


def _length(data: bytes) -> int:
    head = data.split(b"\r\n\r\n", 1)[0].decode().lower()
    return next(int(line.split(":")[1]) for line in head.split("\r\n")
                if line.startswith("content-length:"))


def test_a_body_that_stops_arriving_is_408_after_the_timeout(base: str) -> None:
    conn = _stalled(base)
    started = time.monotonic()
    status, body = _answer(conn)
    waited = time.monotonic() - started
    conn.close()
    assert (status, body["error"]["code"]) == (408, "body_timeout")
    assert TIMEOUT_S - 0.5 < waited < TIMEOUT_S + 10


def test_a_tenant_sending_too_many_bodies_at_once_is_refused_the_next(base: str) -> None:
    held = [_stalled(base) for _ in range(2)]
    try:
        third = _stalled(base, b"")
        started = time.monotonic()
        status, body = _answer(third)
        assert (status, body["error"]["code"]) == (429, "too_many_uploads")
        assert time.monotonic() - started < TIMEOUT_S  # at once, not after the others' wait
        third.close()
    finally:
        for conn in held:
            conn.close()
