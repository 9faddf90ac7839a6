"""compose.yaml for real: the images built from the repository's Dockerfile (and local NATS
and Redis images) run as containers under podman, with the cpu profile, on the test's own
podman network. Every service must become healthy by its own health check; a key made inside
the auth container streams a chat answer through the gateway's port published on 127.0.0.1;
a trace reaches the test's OTLP receiver (in Jaeger's place); `--scale inference=2` serves
from both workers; `down` (with podman's own clean-up of what podman-compose leaves after a
scale-up, as docs/OPERATIONS.md gives it) leaves nothing behind.

Slow (it builds the images on first use, then starts the whole mesh) and needs root: it runs
only when KVMESH_COMPOSE_TEST=1 (`scripts/compose-test.sh` sets it). It sets the engine up
with the project's own scripts (deploy/podman/engine.sh, deploy/podman/images.sh).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from kvmesh.cli import procs
from tests.deploy import compose_file
from tests.deploy.podman_stack import PodmanStack, run
from tests.integration.otlp_receiver import OtlpReceiver

PROJECT = "kvmesh-test"
MODEL = "SmolLM2-135M-Instruct"
HEALTH_TIMEOUT_S = {"inference": 420.0, "router": 180.0}  # the rest: 120 s
SERVICES = ("nats", "redis", "auth", "cache", "router", "gateway", "inference")
ROLES = ("GATEWAY", "ROUTER", "WORKER", "AUTH", "CACHE", "OPS")


def _why_not() -> str | None:
    if os.environ.get("KVMESH_COMPOSE_TEST") != "1":
        return ("runs compose.yaml in podman containers (builds images, minutes): set "
                "KVMESH_COMPOSE_TEST=1, or run scripts/compose-test.sh")
    if os.geteuid() != 0:
        return "needs root: deploy/podman/engine.sh sets up rootful podman (apt, /etc/containers)"
    if shutil.which("podman") is None and shutil.which("apt-get") is None:
        return "no podman and no apt-get to install it"
    return None


WHY_NOT = _why_not()
pytestmark = [pytest.mark.compose, pytest.mark.timeout(3600),
              pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")]


def _settings(publish_port: int, otlp: str) -> dict[str, str]:
    """.env.example with fresh passwords, the cpu profile, the gateway published on
    127.0.0.1 only, traces to the test's receiver, and a worker sized for two cores."""
    env = compose_file.env_example()
    # a letter first: nats-server reads a value that starts with a digit as a number
    env.update({f"KVMESH_NATS_{r}_PASSWORD": "p" + secrets.token_urlsafe(18) for r in ROLES})
    env["KVMESH_REDIS_PASSWORD"] = "p" + secrets.token_urlsafe(18)
    env.update({
        "COMPOSE_PROFILES": "cpu",
        "KVMESH_IMAGE": "localhost/kvmesh:latest",
        "KVMESH_GATEWAY_PUBLISH_PORT": f"127.0.0.1:{publish_port}",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp,
        "KVMESH_WORKER_TORCH_THREADS": "1",
        "KVMESH_WORKER_MAX_MODEL_LEN": "1024",
        "KVMESH_WORKER_NUM_KV_BLOCKS": "256",
    })
    return env


@dataclass
class Deployed:
    """The running stack, the test's OTLP receiver, and the gateway's URL on 127.0.0.1."""

    stack: PodmanStack
    otlp: OtlpReceiver
    gateway_url: str


def _prepare_engine(logs: Path) -> None:
    """The project's own scripts: engine settings, then the images (kept when present)."""
    env = {**os.environ, "KVMESH_PYTHON": sys.executable}
    for script in ("engine.sh", "images.sh"):
        run(["bash", str(compose_file.ROOT / "deploy" / "podman" / script)], 3000, env,
            logs / "setup.log")


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    logs = tmp_path_factory.mktemp("compose-podman")
    _prepare_engine(logs)
    probe = PodmanStack(PROJECT, {}, logs)
    probe.remove_leftovers()  # of a run that was killed
    gateway_ip = probe.create_network()
    # The receiver listens on the host's side of the network, which exists once a container
    # has joined: it starts after `up` (spans wait in the services' exporters until then).
    otlp = OtlpReceiver(procs.free_port(), host=gateway_ip)
    publish = procs.free_port()
    stack = PodmanStack(PROJECT, _settings(publish, f"http://{gateway_ip}:{otlp.port}"), logs)
    try:
        stack.compose("up", "-d", "--no-build")
        otlp.start()
        yield Deployed(stack, otlp, f"http://127.0.0.1:{publish}/v1")
    finally:
        if stack.containers(all_states=True):
            stack.save_logs(logs / "containers.log")
            stack.compose("down", "-v", timeout=300)
        stack.remove_leftovers()
        otlp.stop()


def _one(stack: PodmanStack, service: str) -> str:
    names = stack.containers(service)
    assert len(names) == 1, f"{service}: {names}"
    return names[0]


def _api_key(stack: PodmanStack) -> str:
    auth = _one(stack, "auth")
    # Once seen here: the first lookup of `redis` from a fresh container failed with "Temporary
    # failure in name resolution" (podman's aardvark-dns on a loaded machine). The key is made
    # once the name resolves, so that a lasting DNS failure still fails the test, by name.
    deadline = time.monotonic() + 30
    while subprocess.run(["podman", "exec", auth, "getent", "hosts", "redis"],
                         capture_output=True, timeout=60).returncode != 0:
        assert time.monotonic() < deadline, "`redis` does not resolve in the auth container"
        time.sleep(0.5)
    out = stack.exec(auth, "kvmesh", "keys", "create", "--tenant", "compose-test")
    return out.strip().splitlines()[-1]


def _chat(client, content: str) -> str:  # type: ignore[no-untyped-def]
    stream = client.chat.completions.create(
        model=MODEL, max_tokens=8, temperature=0, stream=True,
        messages=[{"role": "user", "content": content}])
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_every_service_becomes_healthy_by_its_own_check(deployed: Deployed) -> None:
    stack = deployed.stack
    models = stack.containers("models", all_states=True)
    assert len(models) == 1 and stack.wait_exited(models[0], 600) == 0
    took = {s: stack.wait_healthy(_one(stack, s), HEALTH_TIMEOUT_S.get(s, 120.0))
            for s in SERVICES}
    print("seconds to healthy:", {s: round(t, 1) for s, t in took.items()})
    for service in SERVICES:
        state = stack.inspect(_one(stack, service))["State"]
        assert state["Health"]["Status"] == "healthy", (service, state["Health"])


def test_chat_streams_through_the_published_port_with_a_key_from_auth(deployed: Deployed
                                                                       ) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=deployed.gateway_url, api_key=_api_key(deployed.stack),
                    max_retries=0, timeout=120)
    deadline = time.monotonic() + 60
    while MODEL not in {m.id for m in client.models.list().data}:  # the worker's heartbeat
        assert time.monotonic() < deadline, "the gateway never listed the model"
        time.sleep(0.5)
    assert _chat(client, "Say hello.").strip()


def test_a_wrong_key_is_refused(deployed: Deployed) -> None:
    from openai import AuthenticationError, OpenAI

    client = OpenAI(base_url=deployed.gateway_url, api_key="sk-not-a-key", max_retries=0,
                    timeout=30)
    with pytest.raises(AuthenticationError):
        _chat(client, "Say hello.")


def test_a_trace_reaches_the_otlp_receiver(deployed: Deployed) -> None:
    # the chat of the test above made it: one trace across gateway, router and worker
    spans = deployed.otlp.wait_for(
        lambda ss: {("kvmesh-gateway", "POST /v1/chat/completions"),
                    ("kvmesh-router", "router.route"), ("kvmesh-worker", "inference.generate")}
        <= {(s.service, s.name) for s in ss}, timeout=60)
    gen = next(s for s in spans if s.name == "inference.generate")
    assert {s.service for s in deployed.otlp.trace(gen.trace_id)} >= {
        "kvmesh-gateway", "kvmesh-router", "kvmesh-worker"}


def test_scaled_to_two_workers_both_serve(deployed: Deployed) -> None:
    from openai import OpenAI

    stack = deployed.stack
    stack.compose("up", "-d", "--no-build", "--scale", "inference=2")
    workers = stack.containers("inference")
    assert len(workers) == 2, workers
    for name in workers:
        stack.wait_healthy(name, HEALTH_TIMEOUT_S["inference"])
    client = OpenAI(base_url=deployed.gateway_url, api_key=_api_key(stack), max_retries=0,
                    timeout=120)
    first = len(deployed.otlp.spans)

    def served_by() -> set[str]:  # workers that served a request since the scale-up
        spans = deployed.otlp.spans[first:]
        return {s.attrs["kvmesh.worker_id"] for s in spans if s.name == "inference.generate"}

    deadline = time.monotonic() + 240
    round_ = 0
    with ThreadPoolExecutor(4) as pool:  # concurrent requests: load-aware routing spreads them
        while len(served_by()) < 2:
            assert time.monotonic() < deadline, f"served by {served_by()} only"
            prompts = [f"Count to {round_ * 4 + i}." for i in range(4)]
            assert all(pool.map(lambda p: _chat(client, p).strip(), prompts))
            round_ += 1
            time.sleep(1.0)  # spans leave the workers in batches; the loop checks again


def test_down_leaves_nothing(deployed: Deployed) -> None:
    stack = deployed.stack
    stack.save_logs(stack.logs / "containers.log")
    stack.compose("down", "-v", timeout=300)
    # podman-compose (1.6) removes only the replicas the file declares: the worker that
    # `--scale` added survives `down` and, through podman's links (--requires), so do the
    # containers and volumes it depends on. docs/OPERATIONS.md gives the clean-up after a
    # scale-up, which is this: every container of the project with its dependencies, then
    # volumes and the network (which the test made itself, for its receiver).
    survivors = {stack.inspect(c)["Config"]["Labels"]["com.docker.compose.service"]
                 for c in stack.containers(all_states=True)}
    assert survivors <= {"inference", "nats", "redis", "models"}, survivors
    stack.remove_leftovers()
    assert stack.leftovers() == {}
