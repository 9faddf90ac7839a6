"""A `--state-dir` that cannot be kvmesh up's directory (a file in its place or above it) stops
`kvmesh up` with one line naming the option, not a traceback, before anything starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.helpers import free_ports

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_an_unusable_state_dir_is_one_line_naming_it(tmp_path: Path, where: str) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    state = blocker if where == "a file" else blocker / "state"
    (port, nats, redis), metrics = free_ports(3, run=6)
    done = subprocess.run(
        [sys.executable, "-m", "kvmesh.cli", "up", "--state-dir", str(state),
         "--port", str(port), "--nats-port", str(nats), "--redis-port", str(redis),
         "--metrics-port", str(metrics), "--ready-timeout", "5"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith(f"kvmesh: --state-dir {state}: "), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
