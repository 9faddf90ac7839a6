"""The worker registry gateways and routers share: a forged or broken heartbeat changes
nothing, and each worker's context is its own."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kvmesh.wire import Heartbeat
from kvmesh.worker_registry import WorkerRegistry

GOOD = Heartbeat("w1", "m", running=0, waiting=0, kv_usage=0.1, num_blocks=100,
                 free_blocks=90, used_blocks=10, max_model_len=4096, block_size=16)


@pytest.mark.parametrize("bad", [
    {"block_size": 0}, {"block_size": 1 << 20}, {"max_model_len": 1}, {"kv_usage": 2.0},
    {"kv_usage": -0.1}, {"running": -1}, {"free_blocks": -5}, {"model": ""},
    {"worker_id": ""},
])
def test_an_out_of_range_heartbeat_is_refused_and_changes_nothing(bad: dict) -> None:
    reg = WorkerRegistry(dead_after=3.0)
    assert reg.observe(GOOD)
    assert not reg.observe(replace(GOOD, **bad))
    (view,) = reg.live("m")
    assert view.beat == GOOD  # the last good heartbeat still stands


def test_each_worker_is_held_to_its_own_context() -> None:
    reg = WorkerRegistry(dead_after=3.0)
    reg.observe(GOOD)
    reg.observe(replace(GOOD, worker_id="small", max_model_len=512))
    fits = {v.beat.worker_id for v in reg.live("m") if v.fits(1000, 100)}
    assert fits == {"w1"}  # the small worker does not shrink the big one's limit
    assert reg.models() == {"m": 4096}
    assert not any(v.fits(4096) for v in reg.live("m"))


def test_a_draining_worker_is_live_for_its_requests_but_takes_no_new_ones() -> None:
    reg = WorkerRegistry(dead_after=3.0)
    reg.observe(replace(GOOD, draining=True))
    assert reg.is_live("w1") and reg.live("m") == [] and reg.live_count() == 0


def test_a_worker_not_yet_heard_of_is_presumed_alive_for_dead_after() -> None:
    import time

    reg = WorkerRegistry(dead_after=3.0)
    now = time.monotonic()
    assert not reg.presumed_dead("w1", since=now)  # a fresh gateway, no heartbeat yet
    assert reg.presumed_dead("w1", since=now - 4.0)  # still nothing after dead_after
    reg.observe(GOOD)
    assert not reg.presumed_dead("w1", since=now - 4.0)  # heard just now
