"""`python -m kvmesh.cli.parent_death PPID COMMAND...`: become COMMAND, set to get SIGTERM when
the process PPID (the launcher that started it) dies, however it dies (SIGKILL included).

Linux's `PR_SET_PDEATHSIG` survives `exec`, so this works for any program (nats-server,
redis-server, the Python services) without a `preexec_fn`, which is unsafe in a parent with
threads. If PPID is already gone when the setting takes hold, the command is not run. On other
systems the command just runs (the launcher's own stop still ends it).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or not args[0].isdigit():
        print("usage: python -m kvmesh.cli.parent_death PPID COMMAND...", file=sys.stderr)
        return 2
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            print(f"prctl failed: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
            return 1
    if os.getppid() != int(args[0]):
        return 1  # the parent died before the setting took hold: nobody wants us now
    os.execvp(args[1], args[1:])
    return 1  # not reached: execvp replaces this process or raises


if __name__ == "__main__":
    sys.exit(main())
