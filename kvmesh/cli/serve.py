"""`kvmesh serve gateway|router|worker|auth|cache [--flag ...]`: run one mesh service here.

Each service reads its typed config (`kvmesh.config`) from the flags and `KVMESH_*` variables.
Also runnable as `python -m kvmesh.cli.serve SERVICE ...`, which is how `kvmesh up` starts them.

SIGTERM ends a service at any time: while it starts (connects to NATS, loads a model) it exits
at once (status 143); once it serves, the service's own handler drains it (see
`kvmesh.actor`, `gateway.server`). A starting service that has not exited `FORCED_EXIT_S` after
the signal (its `SystemExit` was swallowed, or the shutdown waits on a thread that is still
loading) is ended with `os._exit(143)`.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType

from kvmesh.config import ConfigError

SERVICES = ("gateway", "router", "worker", "auth", "cache")
FORCED_EXIT_S = 5.0


def _entry(service: str) -> Callable[[Sequence[str]], int]:
    if service == "gateway":  # the gateway, hosting a router with `colocate_router`
        from kvmesh.cli.colocate import main
    elif service == "cache":
        from cache.service import main
    elif service == "router":
        from router.service import main
    elif service == "auth":
        from auth.service import main
    else:
        from inference.worker import main
    return main


def _exit_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    # The SystemExit surfaces in whatever code runs when the signal lands: a finalizer there
    # reports it as "ignored" and goes on, and asyncio's shutdown waits for executor threads
    # (a worker's wait for its loading engine). The daemon timer ends the process either way.
    timer = threading.Timer(FORCED_EXIT_S, os._exit, (128 + signum,))
    timer.daemon = True
    timer.start()
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    usage = f"usage: kvmesh serve {{{','.join(SERVICES)}}} [--help]"
    if args[:1] in (["-h"], ["--help"]):
        print(usage)
        return 0
    if not args or args[0] not in SERVICES:
        print(usage, file=sys.stderr)
        return 2
    from kvmesh.cli.variables import warn_unknown

    warn_unknown(f"kvmesh serve {args[0]}")  # a misspelt variable would change nothing
    # A container's PID 1 ignores every signal it has no handler for, so without this a
    # service that is still starting ignores `docker stop` until the SIGKILL that follows.
    # The service replaces it with its draining handler once it serves.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        return _entry(args[0])(args[1:])
    except ConfigError as exc:  # a bad flag or variable: one line, not a traceback
        print(f"kvmesh serve {args[0]}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
