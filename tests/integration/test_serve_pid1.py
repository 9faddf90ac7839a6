"""A service started as a container starts it, as PID 1 of its own PID namespace, stops on
SIGTERM while it is still starting (here: NATS never answers). PID 1 ignores every signal it
has no handler for, so before `kvmesh serve` installed one, `docker stop` of such a service
waited out its grace period and ended in SIGKILL (seen in the compose test)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvmesh.cli import procs

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="a PID namespace needs root and unshare (util-linux)")


def _child_of(pid: int, timeout: float) -> int:
    """The first child of `pid` (unshare --fork's child: PID 1 inside the namespace)."""
    deadline = time.monotonic() + timeout
    path = Path(f"/proc/{pid}/task/{pid}/children")
    while time.monotonic() < deadline:
        kids = path.read_text().split() if path.exists() else []
        if kids:
            return int(kids[0])
        time.sleep(0.05)
    raise AssertionError(f"process {pid} started no child in {timeout:g}s")


def _catches(pid: int, sig: int) -> bool:
    """Whether process `pid` has a handler for `sig` (SigCgt in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (sig - 1)))
    return False


@pytest.mark.parametrize("service", ["auth", "gateway"])
def test_a_starting_service_as_pid_1_stops_on_sigterm(service: str, tmp_path: Path) -> None:
    closed = procs.free_port()  # nothing listens: the service keeps retrying NATS
    env = {**os.environ, "KVMESH_NATS_URL": f"nats://127.0.0.1:{closed}",
           "KVMESH_REDIS_URL": f"redis://127.0.0.1:{procs.free_port()}/0",
           "KVMESH_GATEWAY_PORT": str(procs.free_port()), "OTEL_SDK_DISABLED": "true",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    with (tmp_path / "log").open("wb") as log:
        outer = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--kill-child", sys.executable, "-m", "kvmesh.cli",
             "serve", service], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        pid1 = _child_of(outer.pid, 10)
        deadline = time.monotonic() + 60
        while not _catches(pid1, signal.SIGTERM):  # the handler is in before NATS answers
            assert outer.poll() is None, (tmp_path / "log").read_text()
            assert time.monotonic() < deadline, "no SIGTERM handler while starting"
            time.sleep(0.05)
        os.kill(pid1, signal.SIGTERM)
        try:
            code = outer.wait(15)
        except subprocess.TimeoutExpired:
            code = None
        assert code == 128 + signal.SIGTERM, (tmp_path / "log").read_text()
    finally:
        if outer.poll() is None:
            outer.kill()
            outer.wait(10)
