"""A Responses gateway on the session mesh: a cache actor (the responses store, on the
session's Redis) and a gateway of its own without the result cache, so every answer is
generated and every stored response is the one just made. Auth is off: the tenant is ""."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kvmesh.cli import procs
from tests.integration.conftest import Mesh, start_gateway
from tests.integration.helpers import call, wait_until

NO_SUCH_RESPONSE = "/v1/responses/resp_" + "0" * 32


@contextmanager
def responses_gateway(mesh: Mesh, redis_url: str, logs: Path, name: str) -> Iterator[str]:
    """Yield the gateway's base URL once it is ready and its store answers; `name` names the
    two processes' logs (`cache-<name>.log`, `gateway-<name>.log`)."""
    store = procs.start(f"cache-{name}", procs.service_argv("cache"), env={
        "KVMESH_NATS_URL": mesh.nats_url, "KVMESH_CACHE_METRICS_PORT": "0",
        "KVMESH_CACHE_REDIS_URL": redis_url}, log=open(logs / f"cache-{name}.log", "ab"))  # noqa: SIM115
    gateway, url = start_gateway(mesh.nats_url, logs, f"gateway-{name}", result_cache="0")
    try:
        wait_until(lambda: call("GET", url + "/ready")[0] == 200, "the gateway is ready")
        wait_until(lambda: call("GET", url + NO_SUCH_RESPONSE)[0] == 404,
                   "the responses store answers")
        yield url
    finally:
        gateway.stop()
        store.stop()
