"""compose.yaml's services, run here as compose would run them: the same commands (the image's
entrypoint `kvmesh` is `python -m kvmesh.cli`) and the same environment, interpolated from
.env.example, with only the addresses moved onto this machine: nats-server with the generated
per-service users and permissions, redis-server with the .env password, an OTLP receiver in
Jaeger's place, free ports. The health-check commands of compose.yaml decide when each service
is up, as Docker's would; then an API key and a chat request go through the gateway."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from inference.engine.model_store import model_dir
from kvmesh import wire
from kvmesh.cli import local_redis, nats_permissions, procs
from tests.deploy import compose_file
from tests.integration.otlp_receiver import OtlpReceiver

START_ORDER = ("auth", "cache", "router", "inference", "gateway")  # as depends_on orders them
# Only for this machine's two cores: one torch thread, a small context and KV pool.
CPU_BUDGET = {"KVMESH_WORKER_TORCH_THREADS": "1", "KVMESH_WORKER_MAX_MODEL_LEN": "1024",
              "KVMESH_WORKER_NUM_KV_BLOCKS": "256"}


class ComposeHere:
    """compose.yaml's services as local processes."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.env_file = compose_file.env_example()
        self.services = compose_file.load(self.env_file)["services"]
        self.nats_port, self.redis_port = procs.free_port(), procs.free_port()
        self.redis_url = ""  # with the password, once start_infra has started Redis
        self.gateway_port = procs.free_port()
        self.otlp = OtlpReceiver(procs.free_port())
        self.children: dict[str, procs.Child] = {}
        self._envs: dict[str, dict[str, str]] = {}

    def local_env(self, name: str) -> dict[str, str]:
        """The service's compose environment with compose's hosts and ports replaced (the
        same ports on every call: the health check must probe what the service opened)."""
        if name not in self._envs:
            self._envs[name] = self._localise(name)
        return dict(self._envs[name])

    def _localise(self, name: str) -> dict[str, str]:
        env = {k: str(v) for k, v in self.services[name]["environment"].items()}
        for key, value in env.items():
            value = value.replace("@nats:4222", f"@127.0.0.1:{self.nats_port}")
            value = value.replace("@redis:6379", f"@127.0.0.1:{self.redis_port}")
            env[key] = value.replace("http://jaeger:4318", self.otlp.endpoint)
        env["KVMESH_MODEL_DIR"] = str(model_dir())
        if "KVMESH_GATEWAY_PORT" in env:
            env["KVMESH_GATEWAY_PORT"] = str(self.gateway_port)
        for key in env:
            if key.endswith("_METRICS_PORT"):
                env[key] = str(procs.free_port())
        if name == "inference":
            env.update(CPU_BUDGET)
        env["OTEL_BSP_SCHEDULE_DELAY"] = "200"
        return env

    def argv(self, name: str) -> list[str]:
        return [sys.executable, "-m", "kvmesh.cli", *self.services[name]["command"]]

    def start_infra(self) -> None:
        conf = self.logs / "nats.conf"
        conf.write_text(nats_permissions.render(self.nats_port, procs.free_port(),
                                                str(self.logs / "js"), "127.0.0.1"))
        nats_env = {k: str(v) for k, v in self.services["nats"]["environment"].items()}
        self.children["nats"] = procs.start("nats", [procs.nats_server_binary(), "-c", str(conf)],
                                            env=nats_env, log=self._log("nats"))
        procs.wait_port(self.nats_port, 10, self.children["nats"].proc)
        password = self.services["redis"]["environment"]["REDISCLI_AUTH"]
        redis = local_redis.prepare(self.logs, self.redis_port, password)
        self.redis_url = redis.url()
        self.children["redis"] = procs.start_redis(self.redis_port, str(self.logs),
                                                   self._log("redis"), config=str(redis.config))
        self.otlp.start()

    def run_models_pull(self) -> None:
        env = {**os.environ, **{k: str(v) for k, v in
                                self.services["models"]["environment"].items()},
               "KVMESH_MODEL_DIR": str(model_dir()), "PYTHONPATH": str(compose_file.ROOT)}
        done = subprocess.run(self.argv("models"), env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr

    def start(self, name: str) -> None:
        self.children[name] = procs.start(name, self.argv(name), env=self.local_env(name),
                                          log=self._log(name))

    def healthy(self, name: str) -> tuple[bool, str]:
        """Run the service's compose health-check command against its process."""
        test = self.services[name]["healthcheck"]["test"]
        assert test[0] == "CMD" and test[1] == "python"
        env = {**os.environ, **self.local_env(name), "PYTHONPATH": str(compose_file.ROOT),
               "KVMESH_HEALTHCHECK_PID": str(self.children[name].proc.pid)}
        done = subprocess.run([sys.executable, *test[2:]], env=env, capture_output=True,
                              text=True, timeout=30)
        return done.returncode == 0, done.stderr.strip()

    def wait_healthy(self, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        why = ""
        while time.monotonic() < deadline:
            if not self.children[name].alive:
                raise RuntimeError(f"{name} exited; log: {self.logs / (name + '.log')}")
            ok, why = self.healthy(name)
            if ok:
                return
            time.sleep(1.0)
        raise TimeoutError(f"{name} not healthy in {timeout:g}s: {why}")

    def stop(self) -> None:
        for name in reversed(list(self.children)):
            self.children[name].stop()
        with contextlib.suppress(Exception):
            self.otlp.stop()

    def _log(self, name: str) -> Any:
        return open(self.logs / f"{name}.log", "ab")  # the child process owns it


@pytest.fixture(scope="module")
def compose_here(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeHere]:
    here = ComposeHere(tmp_path_factory.mktemp("compose"))
    try:
        here.start_infra()
        here.run_models_pull()
        for name in START_ORDER:
            here.start(name)
        for name in START_ORDER:  # all start at once; the worker's model load dominates
            here.wait_healthy(name, 240 if name == "inference" else 60)
        yield here
    finally:
        here.stop()


def _api_key(here: ComposeHere) -> str:
    from auth.cli import create_key

    plain, _ = asyncio.run(create_key(here.redis_url, {"name": "compose-test", "models": ["*"]},
                                      "compose"))
    return plain


def test_compose_services_serve_a_chat_request_through_the_gateway(
        compose_here: ComposeHere) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"http://127.0.0.1:{compose_here.gateway_port}/v1",
                    api_key=_api_key(compose_here), max_retries=2, timeout=120)
    deadline = time.monotonic() + 60
    while not client.models.list().data:  # the gateway sees the worker's heartbeat
        assert time.monotonic() < deadline, "no model listed"
        time.sleep(0.5)
    reply = client.chat.completions.create(
        model="SmolLM2-135M-Instruct", max_tokens=8, temperature=0,
        messages=[{"role": "user", "content": "Say hello."}])
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    spans = compose_here.otlp.wait_for(  # traces reach the OTLP endpoint compose names
        lambda ss: {("kvmesh-gateway", "POST /v1/chat/completions"),
                    ("kvmesh-router", "router.route"), ("kvmesh-worker", "inference.generate")}
        <= {(s.service, s.name) for s in ss})
    assert len({s.trace_id for s in spans if s.name == "inference.generate"}) >= 1


def test_compose_gateway_refuses_a_request_without_a_key(compose_here: ComposeHere) -> None:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        f"http://127.0.0.1:{compose_here.gateway_port}/v1/chat/completions",
        data=b'{"model": "SmolLM2-135M-Instruct", "messages": []}',
        headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 401


async def _publish_as(url: str, subject: str) -> list[Exception]:
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    nc = await nats.connect(url, error_cb=on_error, allow_reconnect=False)
    try:
        await nc.publish(subject, wire.encode(wire.Ping()))
        await nc.flush()
        await asyncio.sleep(0.3)
    finally:
        await nc.close()
    return errors


def test_nats_refuses_the_gateway_publishing_to_a_worker(compose_here: ComposeHere) -> None:
    url = compose_here.local_env("gateway")["KVMESH_NATS_URL"]
    errors = asyncio.run(_publish_as(url, wire.worker_generate("any")))
    assert any("permissions violation" in str(e).lower() for e in errors), errors
    assert not asyncio.run(_publish_as(url, wire.ROUTER_PING))


def test_healthcheck_reports_a_service_without_nats_as_unhealthy(
        compose_here: ComposeHere) -> None:
    env = {**os.environ, **compose_here.local_env("cache"), "PYTHONPATH": str(compose_file.ROOT),
           "KVMESH_HEALTHCHECK_PID": str(os.getpid())}  # this test process holds no NATS socket
    done = subprocess.run([sys.executable, "-m", "kvmesh.cli.healthcheck", "cache"], env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "no connection to NATS" in done.stderr
