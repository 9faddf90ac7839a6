"""What the mesh exposes (issue 13, item 12): /metrics listens on the configured host, never a
wildcard; the gateway's /metrics, which names tenants, needs a key when auth is on, or moves
to its own port; secrets (a Redis password here) never reach a log line."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from kvmesh.cli import procs
from tests.faults.fake_mesh import ADMIN_KEY, FakeMesh, new_key
from tests.integration.conftest import start_gateway
from tests.integration.helpers import call

PASSWORD = "hunter2-redis-password"


def listen_address(port: int) -> str | None:
    """The IPv4 address a socket listens on at `port` ("0.0.0.0" for every one), from
    /proc/net/tcp; None when nothing listens there."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        addr, hex_port = fields[1].split(":")
        if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
            return ".".join(str(int(addr[i:i + 2], 16)) for i in (6, 4, 2, 0))
    return None


def wait_listening(port: int, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while (addr := listen_address(port)) is None:
        assert time.monotonic() < deadline, f"nothing listens on {port}"
        time.sleep(0.1)
    return addr


def test_a_service_with_a_redis_password_listens_on_its_host_and_logs_no_password(
        fmesh: FakeMesh, tmp_path: Path) -> None:
    redis_port, metrics_port = procs.free_port(), procs.free_port()
    redis = procs.start("redis-pw", [procs.redis_server_binary(), "--port", str(redis_port),
                                     "--bind", "127.0.0.1", "--save", "", "--requirepass",
                                     PASSWORD, "--dir", str(tmp_path)])
    log = tmp_path / "cache.log"
    cache = procs.start("cache-pw", procs.service_argv("cache"), env={
        "KVMESH_NATS_URL": fmesh.nats_url, "KVMESH_CACHE_METRICS_PORT": str(metrics_port),
        "KVMESH_CACHE_REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:{redis_port}/0"},
        log=open(log, "ab"))  # noqa: SIM115 - the child owns it
    try:
        assert wait_listening(metrics_port) == "127.0.0.1"  # was 0.0.0.0
        deadline = time.monotonic() + 30
        while b"result cache on" not in log.read_bytes():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        text = log.read_text()
        assert PASSWORD not in text and "redis://:***@127.0.0.1" in text
    finally:
        cache.stop(timeout=3)
        redis.stop(timeout=3)


def _get(url: str, key: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_gateway_metrics_need_a_key_when_auth_is_on(fmesh: FakeMesh) -> None:
    call("GET", fmesh.auth_url + "/v1/models")  # a request: the gateway's families exist now
    assert _get(fmesh.auth_url + "/metrics")[0] == 401
    status, body = _get(fmesh.auth_url + "/metrics", "kvm_" + "0" * 12 + "_" + "A" * 43)
    assert status == 401 and "metrics key" in body
    status, body = _get(fmesh.auth_url + "/metrics", ADMIN_KEY)
    assert status == 200 and "kvmesh_gateway_requests_total" in body
    # an admin tenant's key is an admin key (README), a plain tenant's is not
    status, body = _get(fmesh.auth_url + "/metrics", new_key(fmesh, admin=True))
    assert status == 200 and "kvmesh_gateway_requests_total" in body
    assert _get(fmesh.auth_url + "/metrics", new_key(fmesh))[0] == 403
    assert _get(fmesh.open_url + "/metrics")[0] == 200  # auth off: local development


def test_gateway_metrics_off_are_nowhere(fmesh: FakeMesh) -> None:
    """`metrics` false (`kvmesh up --metrics-port 0`): no /metrics on the API port, whatever
    the key, and no port of its own."""
    metrics_port = procs.free_port()
    gw, url = start_gateway(fmesh.nats_url, fmesh.logs, "gateway-no-metrics", auth="1",
                            admin_key=ADMIN_KEY, metrics="false")
    try:
        assert call("GET", url + "/metrics", key=ADMIN_KEY)[0] == 404
    finally:
        gw.stop(timeout=3)
    gw, url = start_gateway(fmesh.nats_url, fmesh.logs, "gateway-no-metrics-port", auth="1",
                            metrics="false", metrics_port=str(metrics_port))
    try:
        call("GET", url + "/v1/models")
        assert listen_address(metrics_port) is None
    finally:
        gw.stop(timeout=3)


@pytest.mark.parametrize("auth", ["1", "0"])
def test_gateway_metrics_on_their_own_port_need_no_key_and_leave_the_api_port(
        fmesh: FakeMesh, auth: str) -> None:
    metrics_port = procs.free_port()
    gw, url = start_gateway(fmesh.nats_url, fmesh.logs, f"gateway-metrics-{auth}", auth=auth,
                            metrics_port=str(metrics_port), metrics_key="m-key-123456")
    try:
        assert wait_listening(metrics_port) == "127.0.0.1"
        call("GET", url + "/v1/models")  # a request: the gateway's families exist now
        status, body = _get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200 and "kvmesh_gateway_requests_total" in body
        status, _, _ = call("GET", url + "/metrics", key="m-key-123456")
        assert status == 404
    finally:
        gw.stop(timeout=3)
    assert b"m-key-123456" not in (fmesh.logs / f"gateway-metrics-{auth}.log").read_bytes()
