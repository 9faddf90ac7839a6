"""A small mesh of its own for tests that signal or starve its parts (drain, payload limits):
its own nats-server (optionally with a small `max_payload`), a router, a gateway and N workers.
Metrics ports are off so it never collides with the session mesh. Nothing here touches the
session mesh of conftest.py."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kvmesh.cli import procs
from tests.integration.conftest import MAX_MODEL_LEN, Mesh, start_gateway


def start_nats(port: int, logs: Path, max_payload: int | None = None) -> procs.Child:
    """nats-server on `port`; `max_payload` (bytes) goes through a config file, the only way
    nats-server takes it."""
    argv = [procs.nats_server_binary(), "-a", "127.0.0.1", "-p", str(port)]
    if max_payload is not None:
        conf = logs / "nats.conf"
        conf.write_text(f"max_payload: {max_payload}\n")
        argv += ["-c", str(conf)]
    child = procs.start("nats", argv, log=open(logs / "nats.log", "ab"))  # noqa: SIM115
    procs.wait_port(port, 10, child.proc)
    return child


def start_worker(m: Mesh, worker_id: str, grace_period: float = 30.0,
                 env: dict[str, str] | None = None) -> None:
    """A worker of `m`; `env` adds (or overrides) its `KVMESH_WORKER_*` settings."""
    log = open(m.logs / f"{worker_id}.log", "ab")  # noqa: SIM115 - the child owns it
    m.workers[worker_id] = procs.start(worker_id, procs.service_argv("worker"), env={
        "KVMESH_NATS_URL": m.nats_url, "KVMESH_WORKER_WORKER_ID": worker_id,
        "KVMESH_WORKER_TORCH_THREADS": "1", "KVMESH_WORKER_MAX_MODEL_LEN": str(MAX_MODEL_LEN),
        "KVMESH_WORKER_NUM_KV_BLOCKS": "256", "KVMESH_WORKER_METRICS_PORT": "0",
        "KVMESH_WORKER_GRACE_PERIOD": str(grace_period), **(env or {}),
    }, log=log)


@contextmanager
def private_mesh(logs: Path, workers: tuple[str, ...] = ("a", "b"),
                 max_payload: int | None = None, grace_period: float = 30.0,
                 worker_env: dict[str, str] | None = None) -> Iterator[tuple[Mesh, procs.Child]]:
    """Yield (the mesh, its nats-server); `mesh.others` holds router and gateway;
    `worker_env`: settings for every worker (`start_worker`)."""
    logs.mkdir(parents=True, exist_ok=True)
    nats_port = procs.free_port()
    nats = start_nats(nats_port, logs, max_payload)
    nats_url = f"nats://127.0.0.1:{nats_port}"
    router = procs.start("router", procs.service_argv("router"), env={
        "KVMESH_NATS_URL": nats_url, "KVMESH_ROUTER_WORKER_DEAD_AFTER": "2",
        "KVMESH_ROUTER_ACCEPT_TIMEOUT": "3", "KVMESH_ROUTER_METRICS_PORT": "0",
    }, log=open(logs / "router.log", "ab"))  # noqa: SIM115
    gateway, base_url = start_gateway(nats_url, logs, result_cache="0")
    m = Mesh(nats_url, base_url, logs, others=[router, gateway])
    try:
        for w in workers:
            start_worker(m, w, grace_period, worker_env)
        m.wait_ready(len(workers))
        yield m, nats
    finally:
        for child in [*m.workers.values(), *m.others, nats]:
            child.stop(timeout=3)
