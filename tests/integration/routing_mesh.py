"""A mesh of its own for the routing and result-cache tests: its own nats-server (so its router
is the only one in the queue group), router with a chosen policy, result-cache actor on its own
redis-server, gateway and two workers. These tests stop, pause and kill parts of it, so they
never disturb the shared session mesh."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from kvmesh.cli import procs
from tests.integration.conftest import Mesh, start_gateway


def _log(path: Path) -> IO[bytes]:
    return open(path, "ab")  # the child process owns it


@contextmanager
def own_mesh(
    logs: Path,
    router_env: dict[str, str] | None = None,
    workers: tuple[str, ...] = ("a", "b"),
    num_kv_blocks: int = 256,
    cache_env: dict[str, str] | None = None,
    gateway_env: dict[str, str] | None = None,
) -> Iterator[tuple[Mesh, procs.Child]]:
    """Yield (the mesh, its redis-server); `mesh.others` holds router, cache and gateway.
    `cache_env`, `gateway_env`: more variables for the cache actor and the gateway
    (`KVMESH_GATEWAY_*` names, as `start_gateway` takes them, lower-cased)."""
    logs.mkdir(parents=True, exist_ok=True)
    nats_port, redis_port = procs.free_port(), procs.free_port()
    nats = procs.start_nats(nats_port, log=_log(logs / "nats.log"))
    redis = procs.start_redis(redis_port, str(logs), log=_log(logs / "redis.log"))
    nats_url = f"nats://127.0.0.1:{nats_port}"
    env = {
        "KVMESH_NATS_URL": nats_url,
        "KVMESH_ROUTER_WORKER_DEAD_AFTER": "2",
        "KVMESH_ROUTER_ACCEPT_TIMEOUT": "2",
        **(router_env or {}),
    }
    router = procs.start(
        "router", procs.service_argv("router"), env=env, log=_log(logs / "router.log")
    )
    cache = procs.start(
        "cache",
        procs.service_argv("cache"),
        env={
            "KVMESH_NATS_URL": nats_url,
            "KVMESH_CACHE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            **(cache_env or {}),
        },
        log=_log(logs / "cache.log"),
    )
    m = Mesh(nats_url, "", logs, others=[router, cache])
    try:  # whatever fails to start, what did start is stopped
        gateway, m.base_url = start_gateway(nats_url, logs, **(gateway_env or {}))
        m.others.append(gateway)
        for w in workers:
            m.start_worker(w, num_kv_blocks)
        m.wait_ready(len(workers))
        yield m, redis
    finally:
        for child in [*m.workers.values(), *m.others, redis, nats]:
            child.stop(timeout=3)


def restart_router(m: Mesh, router_env: dict[str, str] | None = None) -> None:
    """Replace the mesh's router with a fresh one (which must rebuild its KV index)."""
    old = m.others[0]
    old.stop(timeout=3)
    env = {
        "KVMESH_NATS_URL": m.nats_url,
        "KVMESH_ROUTER_WORKER_DEAD_AFTER": "2",
        "KVMESH_ROUTER_ACCEPT_TIMEOUT": "2",
        **(router_env or {}),
    }
    m.others[0] = procs.start(
        "router", procs.service_argv("router"), env=env, log=_log(m.logs / "router.log")
    )
