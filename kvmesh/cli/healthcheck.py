"""`python -m kvmesh.cli.healthcheck SERVICE`: the container health check of one kvmesh service.

Exit 0 when healthy, 1 (with one line on stderr saying why) when not. It reads the service's
own config (`kvmesh.config`, the same KVMESH_* variables the service reads), so it probes the
ports the service really uses. Needs nothing but the Python in the image.

What "healthy" means, per service:
- gateway: `GET /health` on its HTTP port answers 200 (the process serves HTTP). Readiness
  (`/ready`: a router answers and a worker is live) is for load balancers, not for restarts.
- router: its `/metrics` answers (when `metrics_port` is on) and it holds a NATS connection.
- worker: its `/metrics` shows the engine's KV pool (the model is loaded; when
  `metrics_port` is on) and it holds a NATS connection.
- auth, cache: their `/metrics` answers (when `metrics_port` is on) and the process holds a
  NATS connection (the actor base reconnects forever, so a lost connection shows here).

"Holds a NATS connection" is read from /proc: a socket of process `KVMESH_HEALTHCHECK_PID`
(default 1, the service in its container) that is ESTABLISHED to the port of `nats_url`.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from kvmesh.config import (
    AuthConfig,
    CacheConfig,
    GatewayConfig,
    RouterConfig,
    load,
)

TIMEOUT_S = 3.0
KV_METRIC = "kvmesh_worker_kv_cache_blocks{"  # present once the worker's engine is loaded


class Unhealthy(Exception):
    """The reason a check failed."""


def _get(port: int, path: str) -> str:
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
            return resp.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        raise Unhealthy(f"GET {url}: {exc}") from None


def nats_ports(nats_url: str) -> set[int]:
    """The server ports of a (comma-separated) NATS URL list."""
    ports = set()
    for part in nats_url.split(","):
        parsed = urlsplit(part.strip() if "://" in part else "nats://" + part.strip())
        ports.add(parsed.port or 4222)
    return ports


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        for fd in fd_dir.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError as exc:
        raise Unhealthy(f"cannot read {fd_dir}: {exc}") from None
    return inodes


def established_to(pid: int, ports: set[int]) -> bool:
    """Whether process `pid` has an ESTABLISHED TCP connection to one of `ports`."""
    inodes = _socket_inodes(pid)
    for table in (f"/proc/{pid}/net/tcp", f"/proc/{pid}/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            remote_port = int(cols[2].rsplit(":", 1)[1], 16)
            if cols[3] == "01" and remote_port in ports and cols[9] in inodes:
                return True
    return False


def _check_nats(nats_url: str) -> None:
    pid = int(os.environ.get("KVMESH_HEALTHCHECK_PID", "1"))
    if not established_to(pid, nats_ports(nats_url)):
        raise Unhealthy(f"process {pid} has no connection to NATS "
                        f"(ports {sorted(nats_ports(nats_url))})")


def check(service: str, argv: Sequence[str] = ()) -> None:
    """Raise `Unhealthy` unless `service` is healthy (see the module doc)."""
    if service == "gateway":
        gw = load(GatewayConfig, argv)
        _get(gw.port, "/health")
    elif service in ("router", "auth", "cache"):
        cls = {"router": RouterConfig, "auth": AuthConfig, "cache": CacheConfig}[service]
        cfg = load(cls, argv)
        if cfg.metrics_port > 0:
            _get(cfg.metrics_port, "/metrics")
        _check_nats(cfg.nats_url)
    elif service == "worker":
        from inference.worker_config import WorkerConfig  # the worker's, with the engine's

        wk = load(WorkerConfig, argv)
        if wk.metrics_port > 0 and KV_METRIC not in _get(wk.metrics_port, "/metrics"):
            raise Unhealthy("the engine is not loaded yet (no KV pool on /metrics)")
        _check_nats(wk.nats_url)
    else:
        raise Unhealthy(f"unknown service {service!r}")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: python -m kvmesh.cli.healthcheck {gateway,router,worker,auth,cache}",
              file=sys.stderr)
        return 2
    try:
        check(args[0], args[1:])
    except Unhealthy as exc:
        print(f"unhealthy: {args[0]}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
