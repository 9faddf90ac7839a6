"""`kvmesh up` stops the same way however many stop signals arrive: a SIGTERM after the Ctrl-C
that started the stop (a service manager's, an impatient user's) neither cuts the stop short
nor leaves a child running."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.conftest import MODEL
from tests.integration.helpers import free_ports, read_banner
from tests.integration.test_kvmesh_up import processes_mentioning

GRACE = 3.0


def test_a_sigterm_while_stopping_neither_cuts_the_stop_short_nor_leaves_children(
        tmp_path: Path) -> None:
    from openai import OpenAI

    (port, nats_port, redis_port), mport = free_ports(3, run=6)
    up = subprocess.Popen(
        [sys.executable, "-m", "kvmesh.cli", "up", "--port", str(port),
         "--nats-port", str(nats_port), "--redis-port", str(redis_port),
         "--metrics-port", str(mport), "--state-dir", str(tmp_path),
         "--grace-period", str(GRACE)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        cwd=Path(__file__).resolve().parents[2])
    needles = (f"127.0.0.1:{nats_port}", f"-p\0{nats_port}", f"127.0.0.1:{redis_port}")
    try:
        banner = read_banner(up, 240)
        assert processes_mentioning(*needles)
        key = next(line.split(": ")[-1] for line in banner.splitlines() if "API key" in line)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
        # a stream still generating: the worker and the gateway drain it, so the stop lasts
        # about the grace period and the SIGTERM below lands in the middle of it
        stream = client.completions.create(model=MODEL, prompt="Once upon a time",
                                           max_tokens=4000, stream=True, timeout=60)
        next(iter(stream))

        started = time.monotonic()
        up.send_signal(signal.SIGINT)
        assert up.stdout is not None
        seen = ""
        while "stopping" not in seen:  # the stop has begun
            line = up.stdout.readline()
            assert line, seen
            seen += line
        up.send_signal(signal.SIGTERM)
        rest, _ = up.communicate(timeout=GRACE + 15)
        assert up.returncode == 0, seen + rest
        assert "Traceback" not in seen + rest
        assert time.monotonic() - started < GRACE + 5
        deadline = time.monotonic() + 5  # the groups were SIGKILLed: only reaping is left
        while processes_mentioning(*needles):
            assert time.monotonic() < deadline, "children outlived the stop"
            time.sleep(0.1)
        stream.close()
    finally:
        if up.poll() is None:
            up.kill()
        up.wait(10)
