"""A worker whose engine process died exits with status 1 (its supervisor restarts it) and says
so in its JSON log, one line per event: no raw traceback after them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from kvmesh.cli import procs

ROOT = Path(__file__).resolve().parents[2]

# The worker's entry point, its serve() standing in for one whose engine was killed (-9):
# serve raises EngineDied exactly there.
DRIVER = """
import sys
from inference import worker

async def engine_killed(cfg):
    raise worker.EngineDied("the engine process exited (code -9)")

worker.serve = engine_killed
sys.exit(worker.main(sys.argv[1:]))
"""


def test_a_dead_engine_ends_the_worker_with_status_1_and_one_json_error_line() -> None:
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, "--worker-id", "w0", "--metrics-port", "0",
         "--nats-url", f"nats://127.0.0.1:{procs.free_port()}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert all(line.startswith("{") for line in lines), done.stderr  # JSON lines only
    last = json.loads(lines[-1])
    assert last["level"] == "ERROR", last
    assert "w0" in last["msg"] and "the engine process exited (code -9)" in last["msg"]
