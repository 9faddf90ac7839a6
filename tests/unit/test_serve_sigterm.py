"""`kvmesh serve`'s start-up SIGTERM handler ends the process even where the `SystemExit` it
raises never reaches the top: code that swallows it (a finalizer reports it as "ignored") or a
shutdown that waits on a thread. Its timer then ends the process with status 143."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from kvmesh.cli.serve import FORCED_EXIT_S

ROOT = Path(__file__).resolve().parents[2]

# "ready" is printed inside the `try`: a SIGTERM sent the moment it is read may run the
# handler before `signal.pause()`, and its SystemExit must be caught there too.
SWALLOWS = textwrap.dedent("""
    import signal, sys
    from kvmesh.cli import serve
    signal.signal(signal.SIGTERM, serve._exit_on_sigterm)
    announced = False
    while True:  # every SystemExit is caught here, as a finalizer would
        try:
            if not announced:
                announced = True
                print("ready", flush=True)
            signal.pause()
        except SystemExit:
            print("swallowed", flush=True)
""")


def test_a_swallowed_sigterm_exit_still_ends_the_process() -> None:
    proc = subprocess.Popen([sys.executable, "-c", SWALLOWS], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout.readline().strip() == "swallowed"  # SystemExit did not end it...
        assert proc.wait(30) == 128 + signal.SIGTERM  # ...the timer did
        assert time.monotonic() - sent >= FORCED_EXIT_S * 0.9
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
