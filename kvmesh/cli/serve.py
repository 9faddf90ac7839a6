"""`kvmesh serve gateway|router|worker|auth|cache [--flag ...]`: run one mesh service here.

Each service reads its typed config (`kvmesh.config`) from the flags and `KVMESH_*` variables.
Also runnable as `python -m kvmesh.cli.serve SERVICE ...`, which is how `kvmesh up` starts them.

SIGTERM ends a service at any time: while it starts (connects to NATS, loads a model) it exits
at once (status 143); once it serves, the service's own handler drains it (see
`kvmesh.actor`, `gateway.server`).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType

SERVICES = ("gateway", "router", "worker", "auth", "cache")


def _entry(service: str) -> Callable[[Sequence[str]], int]:
    if service == "gateway":
        from gateway.server import main
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
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in SERVICES:
        print(f"usage: kvmesh serve {{{','.join(SERVICES)}}} [--help]", file=sys.stderr)
        return 2
    # A container's PID 1 ignores every signal it has no handler for, so without this a
    # service that is still starting ignores `docker stop` until the SIGKILL that follows.
    # The service replaces it with its draining handler once it serves.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    return _entry(args[0])(args[1:])


if __name__ == "__main__":
    sys.exit(main())
