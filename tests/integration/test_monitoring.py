"""Monitoring against `kvmesh up` as a user runs it: a worker exports every vLLM metric name
(with the same values as kvmesh's own), the router counts its decisions, and `kvmesh top`,
driven in a pseudo-terminal, shows the worker, the gateway, the router and the tenant, then
quits on `q` and gives the terminal back."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from inference.vllm_names import EXPOSED
from telemetry.mesh_view import Samples, parse
from tests.integration.conftest import MODEL
from tests.integration.helpers import free_ports, read_banner

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class UpMesh:
    base_url: str
    key: str
    nats_url: str
    redis_url: str
    metrics_port: int  # router; the worker is +1, auth +2, cache +3, the gateway +4

    def scrape(self, port: int) -> Samples:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return parse(resp.read().decode())


@pytest.fixture(scope="module")
def up_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpMesh]:
    state = tmp_path_factory.mktemp("up-monitoring")
    (port, nats_port, redis_port), mport = free_ports(3, run=5)
    up = subprocess.Popen(
        [sys.executable, "-m", "kvmesh.cli", "up", "--port", str(port), "--nats-port",
         str(nats_port), "--redis-port", str(redis_port), "--metrics-port", str(mport),
         "--state-dir", str(state), "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        env={**os.environ, "KVMESH_WORKER_MAX_MODEL_LEN": "1024",
             "KVMESH_WORKER_NUM_KV_BLOCKS": "256"})
    try:
        banner = read_banner(up, 240)
        assert f"router :{mport}/metrics" in banner  # the router process's port, scraped below
        key = next(ln.split(": ")[-1] for ln in banner.splitlines() if "API key" in ln)
        nats_url = (state / "nats-ops.url").read_text().strip()  # NATS has a user per role
        redis_url = (state / "redis.url").read_text().strip()  # so has Redis, a password
        yield UpMesh(f"http://127.0.0.1:{port}", key, nats_url, redis_url, mport)
    finally:
        up.terminate()
        try:
            up.wait(timeout=15)
        except subprocess.TimeoutExpired:
            up.kill()


def _chat(mesh: UpMesh, content: str, max_tokens: int = 4, key: str = "") -> None:
    from openai import OpenAI

    client = OpenAI(base_url=mesh.base_url + "/v1", api_key=key or mesh.key, max_retries=0)
    resp = client.chat.completions.create(model=MODEL, max_tokens=max_tokens, temperature=0.7,
                                          messages=[{"role": "user", "content": content}])
    assert resp.usage.completion_tokens > 0


def _one(samples: Samples, name: str, **labels: str) -> float:
    (value,) = [v for k, v in samples.get(name, {}).items() if dict(k) == labels]
    return value


def test_worker_exports_every_vllm_name_with_kvmesh_values(up_mesh: UpMesh) -> None:
    _chat(up_mesh, "Name a colour.")
    s = up_mesh.scrape(up_mesh.metrics_port + 1)
    assert _one(s, "kvmesh_service_info", service="worker", instance="w0") == 1
    scraped = set(s)
    for name in EXPOSED:
        assert name in scraped or name + "_count" in scraped, f"{name} missing"
    for name in (n for n in scraped if n.startswith("vllm:")):
        for labels in s[name]:
            assert dict(labels).get("model_name") == MODEL, (name, labels)
    pairs = [("prompt_tokens_total", "vllm:prompt_tokens_total"),
             ("generation_tokens_total", "vllm:generation_tokens_total"),
             ("time_to_first_token_seconds_count", "vllm:time_to_first_token_seconds_count"),
             ("inter_token_latency_seconds_count", "vllm:inter_token_latency_seconds_count"),
             ("e2e_request_latency_seconds_sum", "vllm:e2e_request_latency_seconds_sum"),
             ("num_requests_running", "vllm:num_requests_running"),
             ("kv_cache_usage_ratio", "vllm:kv_cache_usage_perc"),
             ("prefix_cache_query_tokens_total", "vllm:prefix_cache_queries_total"),
             ("request_prompt_tokens_sum", "vllm:request_prompt_tokens_sum"),
             ("request_generation_tokens_count", "vllm:request_generation_tokens_count"),
             ("request_decode_time_seconds_sum", "vllm:request_decode_time_seconds_sum")]
    for ours, theirs in pairs:
        mine = _one(s, "kvmesh_worker_" + ours, model=MODEL)
        assert _one(s, theirs, model_name=MODEL) == mine, (ours, theirs)
    assert _one(s, "vllm:prompt_tokens_total", model_name=MODEL) > 0
    assert _one(s, "vllm:time_to_first_token_seconds_count", model_name=MODEL) >= 1
    assert _one(s, "vllm:request_generation_tokens_count", model_name=MODEL) >= 1


def test_every_service_measures_its_event_loop_lag(up_mesh: UpMesh) -> None:
    services = ["router", "worker", "auth", "cache", "gateway"]
    for offset, service in enumerate(services):
        port = up_mesh.metrics_port + offset
        deadline = time.monotonic() + 30
        while True:  # the probe observes every 20 ms once the service's loop runs
            counts = up_mesh.scrape(port).get("kvmesh_event_loop_lag_seconds_count", {})
            if any(dict(k) == {"service": service} and v > 0 for k, v in counts.items()):
                break
            assert time.monotonic() < deadline, f"{service} observed no loop lag"


def test_router_counts_why_it_chose_and_the_prefix_it_expected(up_mesh: UpMesh) -> None:
    prompt = "Repeat after me: the quick brown fox jumps over the lazy dog, twice over. " * 3
    router = up_mesh.metrics_port
    deadline = time.monotonic() + 60
    while True:  # the router learns the worker's blocks from KV events, a moment after a step
        _chat(up_mesh, prompt, max_tokens=2)
        s = up_mesh.scrape(router)
        if _one(s, "kvmesh_router_predicted_prefix_tokens_total", model=MODEL) > 0:
            break
        assert time.monotonic() < deadline, "the router never predicted a prefix hit"
    reasons = {dict(k)["reason"] for k in s["kvmesh_router_decisions_total"]}
    assert reasons <= {"only_worker", "prefix_hit", "no_prefix", "after_retry"}
    assert "only_worker" in reasons  # one worker: it is chosen because it is the only one
    assert _one(s, "kvmesh_router_routed_prompt_tokens_total", model=MODEL) >= \
        _one(s, "kvmesh_router_predicted_prefix_tokens_total", model=MODEL)


def test_a_throttled_tenant_counts_under_its_name_everywhere(up_mesh: UpMesh) -> None:
    import asyncio

    from openai import RateLimitError

    from auth.cli import create_key

    key, _ = asyncio.run(create_key(up_mesh.redis_url, {"name": "tiny", "models": ["*"],
                                                        "rpm": 1}, "monitoring test"))
    _chat(up_mesh, "Hi.", max_tokens=1, key=key)  # the bucket's one request
    with pytest.raises(RateLimitError):
        _chat(up_mesh, "Hi again.", max_tokens=1, key=key)
    gateway = up_mesh.scrape(up_mesh.metrics_port + 4)  # kvmesh up: its own /metrics port
    refused = sum(v for k, v in gateway["kvmesh_gateway_requests_total"].items()
                  if dict(k)["tenant"] == "tiny" and dict(k)["status"] == "429")
    assert refused == 1  # under its tenant and model, not "none"
    auth = up_mesh.scrape(up_mesh.metrics_port + 2)
    assert _one(auth, "kvmesh_auth_rate_limited_total", tenant="tiny", limit="requests") == 1
    assert _one(auth, "kvmesh_auth_tenant_headroom_ratio", tenant="tiny", limit="requests") == 0


def _read_until(fd: int, want: list[bytes], timeout: float, seen: bytearray) -> bool:
    """Read the terminal until the latest frame holds every `want`; False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:
                return False
        frame = bytes(seen).rsplit(b"\x1b[H\x1b[2J", 1)[-1]
        if all(w in frame for w in want):
            return True
    return False


def _drain(fd: int, seen: bytearray) -> None:
    """What the child wrote before it exited (Linux answers EIO once it is all read)."""
    while select.select([fd], [], [], 0.5)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return
        if not chunk:
            return
        seen += chunk


def test_kvmesh_top_shows_the_mesh_and_quits_on_q(up_mesh: UpMesh) -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 140, 0, 0))
    top = subprocess.Popen(
        [sys.executable, "-m", "kvmesh.cli", "top", "--nats-url", up_mesh.nats_url, "--port",
         up_mesh.base_url.rsplit(":", 1)[1], "--metrics-ports",
         f"{up_mesh.metrics_port}-{up_mesh.metrics_port + 4}", "--interval", "0.5"],
        stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, start_new_session=True,
        env={**os.environ, "TERM": "xterm"})
    os.close(slave)
    seen = bytearray()
    try:
        want = [b"w0", MODEL.encode(), b" ok ", b"NATS: connected", b"gateway-",
                b"router-"]
        assert _read_until(master, want, 60, seen), bytes(seen)[-3000:].decode(errors="replace")
        assert seen.startswith(b"\x1b[?1049h")  # the alternate screen: the shell's is kept
        _chat(up_mesh, "Count to three.", max_tokens=8)
        assert _read_until(master, [b"dev "], 30, seen), \
            bytes(seen)[-3000:].decode(errors="replace")  # the request's tenant shows up
        os.write(master, b"q")
        assert top.wait(timeout=10) == 0
        _drain(master, seen)
        assert bytes(seen).endswith(b"\x1b[?25h\x1b[?1049l")  # cursor and screen given back
    finally:
        if top.poll() is None:
            top.kill()
        os.close(master)
