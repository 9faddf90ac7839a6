"""Bounds at the gateway's edge (issue 13, item 13): with NATS down a generation is a 503
`no_worker` with Retry-After at once (it was a 504 after the router timeout), and a client that
sends its headers slowly is cut off after `header_timeout` (there was no bound)."""

from __future__ import annotations

import socket
import time

from kvmesh.cli import procs
from tests.faults.fake_backend import FAKE_MODEL
from tests.faults.fake_mesh import FakeMesh, new_key, wait_200
from tests.integration.conftest import start_gateway
from tests.integration.helpers import call

CHAT = "/v1/chat/completions"
BODY = {"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def test_nats_down_is_a_quick_503_no_worker_and_the_mesh_recovers(fmesh: FakeMesh) -> None:
    key = new_key(fmesh)
    assert call("POST", fmesh.auth_url + CHAT, BODY, key)[0] == 200  # the key is cached now
    nats_port = int(fmesh.nats_url.rsplit(":", 1)[1])
    fmesh.children["nats"].stop(timeout=2)
    for url, k in ((fmesh.auth_url, key), (fmesh.open_url, None)):
        deadline = time.monotonic() + 5
        while True:  # until the gateway has noticed the lost connection (about at once)
            started = time.monotonic()
            status, body, headers = call("POST", url + CHAT, BODY, k, timeout=20)
            if status == 503:
                break
            assert time.monotonic() < deadline, (status, body)
        assert body["error"]["code"] == "no_worker", body
        assert int(headers["Retry-After"]) >= 1
        assert time.monotonic() - started < 1.0
    fmesh.children["nats"] = procs.start_nats(nats_port, log=open(  # noqa: SIM115
        fmesh.logs / "nats.log", "ab"))
    deadline = time.monotonic() + 20
    while call("POST", fmesh.auth_url + CHAT, BODY, key, timeout=20)[0] != 200:
        assert time.monotonic() < deadline, "the mesh did not recover after NATS came back"
        time.sleep(0.2)


def test_a_client_sending_headers_slowly_is_cut_off(fmesh: FakeMesh) -> None:
    gw, url = start_gateway(fmesh.nats_url, fmesh.logs, "gateway-headers", header_timeout="1")
    host, port = url.removeprefix("http://").split(":")
    try:
        wait_200(url + "/ready")
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
            sock.settimeout(0.2)
            started = time.monotonic()
            closed = False
            while not closed:  # one header byte every 0.2 s, never finishing
                assert time.monotonic() - started < 5, "the slow client was never cut off"
                try:
                    sock.sendall(b"X")
                    closed = sock.recv(1024) == b""
                except TimeoutError:
                    continue
                except OSError:
                    closed = True
            assert time.monotonic() - started >= 0.8
        assert call("POST", url + CHAT, BODY)[0] == 200  # others are served as before
    finally:
        gw.stop(timeout=3)
