"""What `kvmesh up` gives its children and what its banner says, checked without a mesh: every
child it starts is a sleeping stand-in that records the environment it got, and the services'
configs are read from those environments as the services read them.

- An operator's own setting of a tunable (torch threads, tensor parallel size, engine CPUs,
  the metrics host) wins over the default kvmesh up computes; what must be unique per process
  (worker ids, /metrics ports) stays kvmesh up's.
- `--metrics-port 0` turns every service's /metrics off, and the banner says so.
- The banner names the model as the workers serve it, and brackets an IPv6 host in its URLs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from inference.worker_config import WorkerConfig
from kvmesh.cli import launcher, procs
from kvmesh.config import AuthConfig, CacheConfig, GatewayConfig, LaunchConfig, RouterConfig, load
from kvmesh.local_urls import http_url
from tests.integration.helpers import free_ports

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


@dataclass
class Run:
    """One `kvmesh up` with stand-in children: what it printed, each child's environment and
    the URL it waited on for readiness."""

    cfg: LaunchConfig
    banner: str
    envs: dict[str, dict[str, str]]
    ready_url: str

    def config(self, cls: type, child: str) -> Any:
        return load(cls, env=self.envs[child])


@pytest.fixture
def up(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
       capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[..., Run]]:
    """`up(**settings)` runs `kvmesh up`'s start, banner and stop with those LaunchConfig
    settings (on free ports, in its own state dir); every child is a stand-in."""
    envs: dict[str, dict[str, str]] = {}
    ready: list[str] = []

    def start(name: str, argv: list[str], env: dict[str, str] | None = None,
              log: Any = None, die_with_parent: bool = False) -> procs.Child:
        envs[name] = {**os.environ, **(env or {})}
        return real_start(name, SLEEPER, log=log)

    def stand_in(name: str) -> Callable[..., procs.Child]:
        return lambda *args, **kwargs: real_start(name, SLEEPER)

    def stop_after_banner(sup: object, logs: object) -> None:
        raise launcher.Interrupted("test")  # the first look after the banner: stop

    real_start = procs.start
    monkeypatch.setattr(procs, "start", start)
    monkeypatch.setattr(procs, "start_nats", stand_in("nats"))
    monkeypatch.setattr(procs, "start_redis", stand_in("redis"))
    monkeypatch.setattr(launcher, "_wait_ready", lambda url, *args: ready.append(url))
    monkeypatch.setattr(launcher, "_dev_key", lambda redis_url: "kvm_testkey")
    monkeypatch.setattr(launcher, "_report", stop_after_banner)

    def run(**settings: Any) -> Run:
        (port, nats, redis), metrics = free_ports(3, run=8)
        cfg = LaunchConfig(**{"port": port, "nats_port": nats, "redis_port": redis,
                              "metrics_port": metrics, "model": "dummy:tiny",
                              "busy_poll": 0.0, "grace_period": 0.0,
                              "state_dir": str(tmp_path), **settings})
        assert launcher._up(cfg, tmp_path) == 0
        return Run(cfg, capsys.readouterr().out, envs, ready[-1])

    yield run


def test_operators_own_worker_tunables_win_over_kvmesh_ups_defaults(
        up: Callable[..., Run], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVMESH_WORKER_TORCH_THREADS", "1")
    monkeypatch.setenv("KVMESH_WORKER_ENGINE_CPUS", "0")
    run = up(workers=2)
    for child in ("w0", "w1"):
        worker = run.config(WorkerConfig, child)
        assert worker.torch_threads == 1
        assert worker.engine_cpus == "0"


def test_operators_own_tensor_parallel_size_wins_over_kvmesh_ups(
        up: Callable[..., Run], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVMESH_WORKER_TENSOR_PARALLEL_SIZE", "3")
    assert up().config(WorkerConfig, "w0").engine.tensor_parallel_size == 3


def test_the_shared_form_of_a_tunable_kvmesh_up_computes_wins_too(
        up: Callable[..., Run], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVMESH_TORCH_THREADS", "1")
    monkeypatch.setenv("KVMESH_METRICS_HOST", "0.0.0.0")
    run = up()
    assert run.config(WorkerConfig, "w0").torch_threads == 1
    for cls, child in ((WorkerConfig, "w0"), (RouterConfig, "router"), (AuthConfig, "auth")):
        assert run.config(cls, child).metrics_host == "0.0.0.0"


def test_without_the_operators_settings_kvmesh_ups_defaults_apply(
        up: Callable[..., Run], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KVMESH_WORKER_TORCH_THREADS", "KVMESH_TORCH_THREADS", "KVMESH_METRICS_HOST",
                 "KVMESH_WORKER_TENSOR_PARALLEL_SIZE", "KVMESH_WORKER_ENGINE_CPUS"):
        monkeypatch.delenv(name, raising=False)
    run = up(workers=2, host="127.0.0.2")
    worker = run.config(WorkerConfig, "w1")
    assert worker.torch_threads == max(1, (os.cpu_count() or 1) // 2)
    assert worker.engine.tensor_parallel_size == 1 and worker.engine_cpus == ""
    assert worker.metrics_host == "127.0.0.2"


def test_what_must_be_unique_per_process_stays_kvmesh_ups(
        up: Callable[..., Run], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVMESH_WORKER_WORKER_ID", "mine")
    monkeypatch.setenv("KVMESH_WORKER_METRICS_PORT", "9999")
    monkeypatch.setenv("KVMESH_GATEWAY_METRICS_PORT", "9998")
    run = up(workers=2, gateways=2)
    workers = [run.config(WorkerConfig, w) for w in ("w0", "w1")]
    assert [w.worker_id for w in workers] == ["w0", "w1"]
    gateways = [run.config(GatewayConfig, g) for g in ("gateway0", "gateway1")]
    ports = [c.metrics_port for c in workers + gateways]
    assert len(set(ports)) == 4 and 9999 not in ports and 9998 not in ports
    assert all(g.metrics for g in gateways)


def test_metrics_port_zero_turns_every_services_metrics_off(up: Callable[..., Run]) -> None:
    run = up(metrics_port=0, workers=2, gateways=2)
    children = {"router": RouterConfig, "auth": AuthConfig, "cache": CacheConfig,
                "w0": WorkerConfig, "w1": WorkerConfig, "gateway0": GatewayConfig,
                "gateway1": GatewayConfig}
    for child, cls in children.items():
        assert run.config(cls, child).metrics_port == 0, child
    # a gateway's metrics_port 0 puts /metrics on its API port: `metrics` false turns it off
    assert not any(run.config(GatewayConfig, g).metrics for g in ("gateway0", "gateway1"))
    assert "metrics: off" in run.banner
    assert "/metrics" not in run.banner


def test_the_banner_lists_each_services_metrics_port(up: Callable[..., Run]) -> None:
    run = up(workers=2, gateways=2)
    router = run.config(RouterConfig, "router").metrics_port
    assert f"router :{router}/metrics" in run.banner
    assert f"workers :{router + 1}..{router + 2}/metrics" in run.banner
    assert f"auth :{router + 3}/metrics, cache :{router + 4}/metrics" in run.banner
    assert f"gateways :{router + 5}..{router + 6}/metrics" in run.banner
    assert run.config(GatewayConfig, "gateway1").metrics_port == router + 6


@pytest.mark.parametrize("variable", ["KVMESH_SERVED_NAME", "KVMESH_WORKER_SERVED_NAME"])
def test_the_banner_names_the_model_as_the_workers_serve_it(
        up: Callable[..., Run], monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "mymodel")
    run = up()
    assert run.config(WorkerConfig, "w0").served_name == "mymodel"
    assert "model mymodel)" in run.banner
    assert '"model": "mymodel"' in run.banner and "model='mymodel'" in run.banner
    assert "tiny" not in run.banner


def test_without_a_served_name_the_banner_names_the_workers_model(
        up: Callable[..., Run], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KVMESH_SERVED_NAME", raising=False)
    monkeypatch.delenv("KVMESH_WORKER_SERVED_NAME", raising=False)
    monkeypatch.setenv("KVMESH_WORKER_MODEL", "dummy:smollm2-135m")  # the worker's own wins
    run = up()
    assert '"model": "smollm2-135m"' in run.banner


def test_an_ipv6_host_is_bracketed_in_every_url(up: Callable[..., Run]) -> None:
    run = up(host="::1")
    url = f"http://[::1]:{run.cfg.port}"
    assert run.ready_url == url
    assert f"kvmesh is up: {url} " in run.banner
    assert f"curl {url}/v1/chat/completions" in run.banner
    assert f"base_url='{url}/v1'" in run.banner
    assert "http://::1" not in run.banner


def test_http_url_brackets_ipv6_literals_only() -> None:
    assert http_url("::1", 8370) == "http://[::1]:8370"
    assert http_url("::", 80) == "http://[::]:80"
    assert http_url("127.0.0.1", 8000) == "http://127.0.0.1:8000"
    assert http_url("localhost", 8000) == "http://localhost:8000"
