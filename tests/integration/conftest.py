"""Fixtures for the mesh's integration tests: real nats-server and redis-server on free ports,
and one mesh (router, gateway, two workers with the real SmolLM2) shared by the session.

Workers run with one torch thread each and a 1024-token context, so the suite fits two cores,
and in float32 whatever the CPU: the tests compare numbers with transformers' float32 run and
each request of a batch with the same request alone, exactly, which bfloat16 (the default on a
CPU with native bf16) does not promise. test_default_dtype.py checks the default's numbers.
Each service logs to a file under the session's temporary directory; a failing test's output
names it.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nats
import pytest

from kvmesh import wire
from kvmesh.cli import procs
from kvmesh.wire import Heartbeat, Ping

MODEL = "SmolLM2-135M-Instruct"
MAX_MODEL_LEN = 1024


@dataclass
class Mesh:
    """A running mesh: its URLs, and its worker processes by id."""

    nats_url: str
    base_url: str
    logs: Path
    workers: dict[str, procs.Child] = field(default_factory=dict)
    others: list[procs.Child] = field(default_factory=list)

    def start_worker(self, worker_id: str, num_kv_blocks: int = 256) -> None:
        log = open(self.logs / f"{worker_id}.log", "ab")  # noqa: SIM115 - the child owns it
        self.workers[worker_id] = procs.start(worker_id, procs.service_argv("worker"), env={
            "KVMESH_NATS_URL": self.nats_url, "KVMESH_WORKER_WORKER_ID": worker_id,
            "KVMESH_WORKER_TORCH_THREADS": "1", "KVMESH_WORKER_DTYPE": "float32",
            "KVMESH_WORKER_MAX_MODEL_LEN": str(MAX_MODEL_LEN),
            "KVMESH_WORKER_NUM_KV_BLOCKS": str(num_kv_blocks),
            "KVMESH_WORKER_GATEWAY_DEAD_AFTER": "5",  # test_gateway_crash waits for it
        }, log=log)

    def stats(self, worker_id: str) -> Heartbeat:
        """The worker's live counters, asked over NATS."""
        return asyncio.run(_ask_stats(self.nats_url, worker_id))

    def live_worker_ids(self) -> set[str]:
        return {w for w, c in self.workers.items() if c.alive}

    def wait_ready(self, n_workers: int, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.stats_or_none(w) for w in list(self.live_worker_ids())[:n_workers]) \
                    and self._ready():
                return
            for c in [*self.workers.values(), *self.others]:
                if not c.alive:
                    raise RuntimeError(f"{c.name} exited; see {self.logs}")
            time.sleep(0.5)
        raise TimeoutError(f"mesh not ready in {timeout:g}s; logs in {self.logs}")

    def stats_or_none(self, worker_id: str) -> Heartbeat | None:
        try:
            return self.stats(worker_id)
        except Exception:
            return None

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.base_url + "/ready", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False


async def _ask_stats(nats_url: str, worker_id: str) -> Heartbeat:
    # One connection attempt: with nats-py's defaults, refused credentials retry for 2 minutes.
    nc = await nats.connect(nats_url, allow_reconnect=False, max_reconnect_attempts=1,
                            reconnect_time_wait=0.1, connect_timeout=2,
                            error_cb=_ignore_nats_error)
    try:
        msg = await nc.request(wire.worker_stats(worker_id), wire.encode(Ping()), timeout=2)
        return wire.decode(msg.data, Heartbeat)
    finally:
        await nc.close()


async def _ignore_nats_error(_exc: Exception) -> None:  # the caller sees the raised error
    return None


@pytest.fixture(scope="session")
def logs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mesh-logs")


@pytest.fixture(scope="session")
def nats_url(logs_dir: Path) -> Iterator[str]:
    port = procs.free_port()
    child = procs.start_nats(port, log=open(logs_dir / "nats.log", "ab"))  # noqa: SIM115
    yield f"nats://127.0.0.1:{port}"
    child.stop()


@pytest.fixture(scope="session")
def redis_url(logs_dir: Path) -> Iterator[str]:
    port = procs.free_port()
    child = procs.start_redis(port, str(logs_dir), log=open(logs_dir / "redis.log", "ab"))  # noqa: SIM115
    yield f"redis://127.0.0.1:{port}/0"
    child.stop()


def start_gateway(nats_url: str, logs: Path, name: str = "gateway",
                  **extra: str) -> tuple[procs.Child, str]:
    port = procs.free_port()
    env = {"KVMESH_NATS_URL": nats_url, "KVMESH_GATEWAY_PORT": str(port),
           "KVMESH_GATEWAY_CHUNK_TIMEOUT": "20", "KVMESH_GATEWAY_WORKER_DEAD_AFTER": "2",
           "KVMESH_GATEWAY_AUTH": "0",  # these tests call without keys; test_auth turns it on
           **{f"KVMESH_GATEWAY_{k.upper()}": v for k, v in extra.items()}}
    child = procs.start(name, procs.service_argv("gateway"), env=env,
                        log=open(logs / f"{name}.log", "ab"))  # noqa: SIM115
    try:
        procs.wait_port(port, 30, child.proc)
    except BaseException:
        child.stop()
        raise
    return child, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def mesh(nats_url: str, redis_url: str, logs_dir: Path) -> Iterator[Mesh]:
    router = procs.start("router", procs.service_argv("router"), env={
        "KVMESH_NATS_URL": nats_url, "KVMESH_ROUTER_WORKER_DEAD_AFTER": "2",
        "KVMESH_ROUTER_ACCEPT_TIMEOUT": "3"}, log=open(logs_dir / "router.log", "ab"))  # noqa: SIM115
    m = Mesh(nats_url, "", logs_dir, others=[router])
    try:  # whatever fails to start, what did start is stopped
        gateway, m.base_url = start_gateway(nats_url, logs_dir)
        m.others.append(gateway)
        m.start_worker("w1")
        m.start_worker("w2")
        m.wait_ready(2)
        yield m
    finally:
        for child in [*m.workers.values(), *m.others]:
            child.stop()


@pytest.fixture(scope="session")
def client(mesh: Mesh):  # -> openai.OpenAI
    from openai import OpenAI

    return OpenAI(base_url=mesh.base_url + "/v1", api_key="unused", max_retries=0, timeout=60)
