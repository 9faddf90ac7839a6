"""A gateway started while nats-server is down: it opens its port after its join wait and
answers (health 200, readiness and generations 503 with Retry-After, at once), logs the
unreachable server once per interval, not per retry, joins when NATS comes up, and stops on
SIGTERM while it is still waiting."""

from __future__ import annotations

import time
from pathlib import Path

from gateway.server import JOIN_WAIT_S
from kvmesh.actor import ERROR_LOG_S
from kvmesh.cli import procs
from tests.faults.fake_backend import FAKE_MODEL, FakeBackend
from tests.faults.fake_mesh import wait_200
from tests.integration.conftest import start_gateway
from tests.integration.helpers import call, post

CHAT = {"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def test_gateway_serves_503_until_nats_comes_up_then_joins(tmp_path: Path) -> None:
    nats_port = procs.free_port()
    nats_url = f"nats://127.0.0.1:{nats_port}"
    started = time.monotonic()
    gw, url = start_gateway(nats_url, tmp_path)  # returns once the port is open
    nats = None
    backend = FakeBackend(nats_url)
    try:
        assert time.monotonic() - started >= JOIN_WAIT_S  # it waited for NATS first
        assert call("GET", url + "/health")[0] == 200
        status, body, _ = call("GET", url + "/ready")
        assert (status, body["nats"]) == (503, False)
        asked = time.monotonic()
        status, body, headers = post(url + "/v1/chat/completions", CHAT)
        assert time.monotonic() - asked < 2.0  # at once, not after the router's timeout
        assert status == 503 and body["error"]["code"] == "no_worker", body
        assert int(headers["Retry-After"]) > 0

        nats = procs.start_nats(nats_port, log=open(tmp_path / "nats.log", "ab"))  # noqa: SIM115
        down_s = time.monotonic() - started
        backend.start()
        wait_200(url + "/ready", timeout=30)
        status, body, _ = post(url + "/v1/chat/completions", CHAT)
        assert status == 200, body
        assert body["choices"][0]["finish_reason"] == "stop"

        errors = (tmp_path / "gateway.log").read_text().count("nats error")
        assert 1 <= errors <= down_s / ERROR_LOG_S + 2, errors  # not one line per retry
    finally:
        backend.stop()
        gw.stop(timeout=5)
        if nats is not None:
            nats.stop(timeout=3)


def test_gateway_waiting_for_nats_stops_on_sigterm(tmp_path: Path) -> None:
    gw, url = start_gateway(f"nats://127.0.0.1:{procs.free_port()}", tmp_path)
    assert call("GET", url + "/health")[0] == 200
    stopping = time.monotonic()
    assert gw.stop(timeout=10) == 0
    assert time.monotonic() - stopping < 5.0
