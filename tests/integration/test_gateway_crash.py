"""A gateway process killed (SIGKILL) mid-stream sends no cancel; the worker stops its
request anyway once the gateway's beats stop (`gateway_dead_after`, 5 s for the session's
workers), instead of generating to `max_tokens` for nobody."""

from __future__ import annotations

import signal
import time

from kvmesh.cli import procs
from tests.integration.conftest import MODEL, Mesh, start_gateway
from tests.integration.helpers import call, open_stream, sse_events, wait_until
from tests.integration.test_cancel import serving_worker


def test_a_crashed_gateways_request_stops_at_its_worker(mesh: Mesh) -> None:
    gw, url = start_gateway(mesh.nats_url, mesh.logs, "gateway-crash")
    try:
        _crash_mid_stream(mesh, gw, url)
    finally:
        gw.stop(timeout=0, sig=signal.SIGKILL)  # a no-op once killed; a failed test leaks none


def _crash_mid_stream(mesh: Mesh, gw: procs.Child, url: str) -> None:
    wait_until(lambda: call("GET", url + "/ready")[0] == 200, "the gateway is not ready")
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 900,
            "temperature": 0, "ignore_eos": True}
    resp = open_stream(url + "/v1/completions", body)
    events = sse_events(resp)
    for _ in range(3):
        next(events)
    worker = serving_worker(mesh)
    gw.stop(timeout=0, sig=signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: mesh.stats(worker).running == 0,
               "the worker still generates for the killed gateway", timeout=30)
    assert time.monotonic() - killed < 15  # 5 s of silence, a check, not 900 tokens (30 s)
    resp.close()
