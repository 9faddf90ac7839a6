"""A mesh with every real service but the model: nats-server, redis-server (append-only, so a
restart keeps keys), the auth and result-cache actors, two real gateways and the scripted
`FakeBackend` as router and worker. Cheap to start (no model load), so the fault and fuzz tests
can stop, starve and flood its parts.

- `open_url`: a gateway with auth off and short bounds (router 2 s, chunk 2 s, SSE write 2 s,
  result-cache lookup 0.5 s + 1 s of single-flight waiting).
- `auth_url`: a gateway with auth on (admin key `ADMIN_KEY`, identities cached 0.5 s).
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvmesh.cli import procs
from tests.faults.fake_backend import FakeBackend
from tests.integration.conftest import start_gateway
from tests.integration.helpers import call

ADMIN_KEY = "admin-" + uuid.uuid4().hex
BOUND_S = 2.0  # the open gateway's router, chunk and SSE-write timeouts


@dataclass
class FakeMesh:
    nats_url: str
    redis_port: int
    open_url: str
    auth_url: str
    backend: FakeBackend
    logs: Path
    children: dict[str, procs.Child]

    def start_redis(self) -> None:
        argv = [procs.redis_server_binary(), "--port", str(self.redis_port), "--bind",
                "127.0.0.1", "--save", "", "--appendonly", "yes", "--dir", str(self.logs)]
        child = procs.start("redis", argv, log=open(self.logs / "redis.log", "ab"))  # noqa: SIM115
        procs.wait_port(self.redis_port, 10, child.proc)
        self.children["redis"] = child

    def alive(self) -> dict[str, bool]:
        return {name: c.alive for name, c in self.children.items()}


def _service(m: FakeMesh, name: str, env: dict[str, str]) -> None:
    m.children[name] = procs.start(name, procs.service_argv(name), env={
        "KVMESH_NATS_URL": m.nats_url, **env}, log=open(m.logs / f"{name}.log", "ab"))  # noqa: SIM115


def wait_200(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not 200 within {timeout:g}s")


def new_key(m: FakeMesh, **limits: Any) -> str:
    """A key of a fresh tenant with `limits` (tenant fields), made through the admin API."""
    name = f"t{uuid.uuid4().hex[:12]}"
    status, body, _ = call("POST", m.auth_url + "/admin/tenants", {"name": name, **limits},
                           ADMIN_KEY)
    assert status == 200, body
    status, body, _ = call("POST", m.auth_url + "/admin/keys", {"tenant": name}, ADMIN_KEY)
    assert status == 201, body
    return str(body["key"])


@contextmanager
def fake_mesh(logs: Path) -> Iterator[FakeMesh]:
    logs.mkdir(parents=True, exist_ok=True)
    nats_port = procs.free_port()
    nats = procs.start_nats(nats_port, log=open(logs / "nats.log", "ab"))  # noqa: SIM115
    nats_url = f"nats://127.0.0.1:{nats_port}"
    m = FakeMesh(nats_url, procs.free_port(), "", "", FakeBackend(nats_url), logs,
                 {"nats": nats})
    try:
        m.start_redis()
        redis_url = f"redis://127.0.0.1:{m.redis_port}/0"
        _service(m, "auth", {"KVMESH_REDIS_URL": redis_url, "KVMESH_AUTH_REDIS_TIMEOUT": "0.5"})
        _service(m, "cache", {"KVMESH_REDIS_URL": redis_url, "KVMESH_CACHE_REDIS_TIMEOUT": "0.3"})
        m.backend.start()
        bound = str(BOUND_S)
        gw, m.open_url = start_gateway(nats_url, logs, "gateway-open", router_timeout=bound,
                                       chunk_timeout=bound, stream_write_timeout=bound,
                                       cache_lead_wait="1")
        m.children["gateway-open"] = gw
        gw, m.auth_url = start_gateway(nats_url, logs, "gateway-auth", auth="1",
                                       admin_key=ADMIN_KEY, auth_cache_ttl="0.5")
        m.children["gateway-auth"] = gw
        wait_200(m.open_url + "/ready")
        wait_200(m.auth_url + "/ready")
        yield m
    finally:
        m.backend.stop()
        for child in reversed(list(m.children.values())):
            child.stop(timeout=3)
