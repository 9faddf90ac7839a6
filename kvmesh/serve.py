"""`kvmesh serve gateway|router|worker [--flag value ...]`: run one mesh service in this process.

Each service reads its typed config (`kvmesh.config`) from the flags and `KVMESH_*` variables.
Also runnable as `python -m kvmesh.serve SERVICE ...`, which is how `kvmesh up` starts them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

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


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in SERVICES:
        print(f"usage: kvmesh serve {{{','.join(SERVICES)}}} [--help]", file=sys.stderr)
        return 2
    return _entry(args[0])(args[1:])


if __name__ == "__main__":
    sys.exit(main())
