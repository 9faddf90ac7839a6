"""A client that disconnects mid-stream cancels its request: the worker frees its KV blocks."""

from __future__ import annotations

import time

from tests.integration.conftest import MODEL, Mesh
from tests.integration.helpers import open_stream, sse_events


def serving_worker(mesh: Mesh, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for wid in sorted(mesh.live_worker_ids()):
            if mesh.stats(wid).running > 0:
                return wid
        time.sleep(0.05)
    raise AssertionError("no worker is running the request")


def test_cancelled_stream_frees_blocks(mesh: Mesh) -> None:
    body = {"model": MODEL, "prompt": "Once upon a time " * 20, "max_tokens": 500,
            "temperature": 0, "ignore_eos": True}
    resp = open_stream(mesh.base_url + "/v1/completions", body)
    events = sse_events(resp)
    for _ in range(3):
        next(events)
    wid = serving_worker(mesh)
    busy = mesh.stats(wid)
    assert busy.used_blocks > 0
    resp.close()  # the client goes away

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        stats = mesh.stats(wid)
        if stats.running == 0 and stats.waiting == 0 and stats.used_blocks == 0:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"worker {wid} still holds the request: {stats}")
    assert stats.free_blocks == stats.num_blocks - stats.used_blocks
