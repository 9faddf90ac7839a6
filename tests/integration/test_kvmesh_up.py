"""`kvmesh up` as a user runs it: serves a chat completion, then stops on SIGINT leaving no
process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from kvmesh import procs
from tests.integration.conftest import MODEL


def processes_mentioning(*needles: str) -> list[int]:
    """Pids whose command line or environment contains any of `needles`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            text = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if any(n.encode() in text for n in needles):
            found.append(int(entry.name))
    return found


def test_kvmesh_up_serves_and_stops_cleanly(tmp_path: Path) -> None:
    from openai import OpenAI

    port, nats_port, redis_port = procs.free_port(), procs.free_port(), procs.free_port()
    up = subprocess.Popen(
        [sys.executable, "-m", "kvmesh.cli", "up", "--port", str(port),
         "--nats-port", str(nats_port), "--redis-port", str(redis_port),
         "--state-dir", str(tmp_path), "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        cwd=Path(__file__).resolve().parents[2])
    try:
        banner = ""
        deadline = time.monotonic() + 180
        while "Ctrl-C stops everything" not in banner:
            line = up.stdout.readline()
            assert line or up.poll() is None, banner
            banner += line
            assert time.monotonic() < deadline, banner
        assert f"http://127.0.0.1:{port}" in banner

        second = subprocess.run(
            [sys.executable, "-m", "kvmesh.cli", "up", "--port", str(procs.free_port()),
             "--state-dir", str(tmp_path)], capture_output=True, text=True, timeout=60,
            cwd=Path(__file__).resolve().parents[2])
        assert second.returncode == 1 and "already running" in second.stderr

        key = next(line.split(": ")[-1] for line in banner.splitlines() if "API key" in line)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
        resp = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hello!"}], max_tokens=5)
        assert resp.choices[0].message.content
        needles = (f"127.0.0.1:{nats_port}", f"-p {nats_port}", str(redis_port))
        children = processes_mentioning(*needles)
        assert len(children) >= 5  # nats, redis, router, worker, gateway

        started = time.monotonic()
        up.send_signal(signal.SIGINT)
        up.wait(timeout=15)
        assert time.monotonic() - started < 10
        assert up.returncode == 0
        time.sleep(0.2)
        assert processes_mentioning(*needles) == []
    finally:
        if up.poll() is None:
            up.kill()
