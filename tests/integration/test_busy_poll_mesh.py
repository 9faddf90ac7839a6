"""A mesh whose services poll after each message (kvmesh/busy_poll.py, `KVMESH_BUSY_POLL`):
it serves as one that sleeps does, its gateway, router, worker and engine process poll right
after a request, and once their window has passed they sleep again, although the workers'
heartbeats go on arriving at gateway and router twice a second."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.integration.conftest import MODEL
from tests.integration.helpers import engine_pid, post
from tests.integration.private_mesh import private_mesh

WINDOW = 0.3  # seconds
TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time `pid` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime: the stat's 14th, 15th


def _used(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """CPU seconds each process uses over the next `seconds`."""
    before = {name: _cpu_seconds(pid) for name, pid in pids.items()}
    time.sleep(seconds)  # the span over which CPU is measured, not a wait for a condition
    return {name: round(_cpu_seconds(pid) - before[name], 2) for name, pid in pids.items()}


def test_a_polling_mesh_serves_polls_after_a_request_then_sleeps(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVMESH_BUSY_POLL", str(WINDOW))  # every service inherits it
    with private_mesh(tmp_path, workers=("bp",)) as (m, _):
        router, gateway = (child.proc.pid for child in m.others)
        worker = m.workers["bp"].proc.pid
        pids = {"gateway": gateway, "router": router, "worker": worker,
                "engine": engine_pid(worker)}
        body = {"model": MODEL, "prompt": "Count: one, two,", "max_tokens": 8,
                "temperature": 0}
        status, answer, _ = post(m.base_url + "/v1/completions", body)
        assert status == 200, answer
        assert answer["usage"]["completion_tokens"] == 8
        polling = _used(pids, WINDOW * 0.6)
        assert sum(polling.values()) >= WINDOW * 0.3, polling  # a sleeping mesh uses ~0
        time.sleep(WINDOW)  # every window has passed: the last message came with the answer
        idle = _used(pids, 1.5)
        assert all(v <= 0.2 for v in idle.values()), idle  # polling would be ~1.5 s each
