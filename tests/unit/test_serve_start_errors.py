"""A service that cannot start says why in one line and exits non-zero: a setting out of
range or of the wrong type (status 2, before anything starts), a model the engine cannot load
(status 1, one error log line), a tokenizer the router cannot load (the same). Never a
traceback."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from inference.engine.config import EngineConfig
from inference.worker_config import WorkerConfig
from kvmesh.cli import procs
from kvmesh.config import (
    AuthConfig,
    CacheConfig,
    ConfigError,
    GatewayConfig,
    LaunchConfig,
    RouterConfig,
    load,
)

ROOT = Path(__file__).resolve().parents[2]

OUT_OF_RANGE = {
    "max_num_seqs": 0, "max_num_batched_tokens": 0, "block_size": 7, "num_kv_blocks": 0,
    "kv_cache_memory": 0, "max_model_len": -5, "gpu_memory_utilization": 1.5,
    "cuda_graph_max_tokens": -1, "tensor_parallel_size": 0,
}


@pytest.mark.parametrize("name", sorted(OUT_OF_RANGE))
def test_engine_config_refuses_a_value_out_of_range_naming_the_field(name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name}="):
        EngineConfig(**{name: OUT_OF_RANGE[name]})


def test_the_edges_of_each_range_are_accepted() -> None:
    EngineConfig(max_num_seqs=1, max_num_batched_tokens=1, block_size=1, num_kv_blocks=1,
                 kv_cache_memory=1, max_model_len=1, gpu_memory_utilization=1.0,
                 cuda_graph_max_tokens=0, tensor_parallel_size=1)
    EngineConfig(block_size=256)


def test_a_worker_flag_out_of_range_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="max_num_seqs=0"):
        load(WorkerConfig, ["--max-num-seqs", "0"], env={})


def _serve(service: str, *flags: str) -> subprocess.CompletedProcess[str]:
    # NATS is never reached: each case fails before the service connects.
    return subprocess.run(
        [sys.executable, "-m", "kvmesh.cli", "serve", service,
         "--nats-url", f"nats://127.0.0.1:{procs.free_port()}", "--metrics-port", "0", *flags],
        cwd=ROOT, capture_output=True, text=True, timeout=120)


def _assert_one_error_log_line(done: subprocess.CompletedProcess[str], says: str,
                               names: str) -> None:
    """Status 1, no traceback, one ERROR log line that says `says` and names `names`."""
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    errors = [json.loads(line) for line in done.stderr.splitlines()
              if line.startswith("{") and '"ERROR"' in line]
    assert len(errors) == 1 and says in errors[0]["msg"], errors
    assert names in errors[0]["msg"]


@pytest.mark.parametrize("flags, says", [
    (("--block-size", "7"), "block_size=7: must be a power of two"),
    (("--max-num-seqs", "lots"), "--max-num-seqs='lots': expected int"),
])
def test_a_bad_setting_is_one_line_and_status_2(flags: tuple[str, ...], says: str) -> None:
    done = _serve("worker", *flags)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("kvmesh serve worker: "), done.stderr
    assert says in done.stderr and done.stderr.count("\n") == 1, done.stderr


def test_a_gateway_that_cannot_listen_is_one_error_line_and_status_1() -> None:
    done = _serve("gateway", "--host", "192.0.2.1", "--auth", "false")
    _assert_one_error_log_line(done, "cannot listen on 192.0.2.1", "gateway")


def test_a_model_that_does_not_load_is_one_error_line_and_status_1(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.gguf"
    done = _serve("worker", "--model", str(missing))
    _assert_one_error_log_line(done, "the engine did not start", str(missing))


SERVICE_OUT_OF_RANGE = [  # (config, field, value, what the error says)
    (GatewayConfig, "router_timeout", 0.0, "router_timeout=0: must be above 0"),
    (GatewayConfig, "port", 70000, "port=70000: must be a port number"),
    (GatewayConfig, "processes", -1, "processes=-1: must be a finite number, not negative"),
    (GatewayConfig, "chunk_timeout", math.inf, "chunk_timeout=inf: must be a finite number"),
    (RouterConfig, "max_concurrency", 0, "max_concurrency=0: must be above 0"),
    (RouterConfig, "policy", "fastest", "policy='fastest': must be one of kv, least-loaded"),
    (CacheConfig, "ttl", math.nan, "ttl=nan: must be a finite number"),
    (AuthConfig, "rate_window", 0.0, "rate_window=0: must be above 0"),
    (LaunchConfig, "gateways", 0, "gateways=0: must be above 0"),
    (LaunchConfig, "log_level", "loud", "log_level='loud': must be one of DEBUG, INFO"),
    (WorkerConfig, "log_level", "debugg", "log_level='debugg': must be one of"),
    (RouterConfig, "overload_kv_usage", 5.0, "overload_kv_usage=5.0: a share, at most 1"),
    (AuthConfig, "redis_url", "notaurl", "redis_url: must be a URL starting with redis://"),
    (GatewayConfig, "nats_url", "127.0.0.1:4222", "nats_url: must be a URL starting with nats://"),
    (WorkerConfig, "heartbeat_interval", -0.5, "heartbeat_interval=-0.5: must be a finite"),
]


@pytest.mark.parametrize("cls, name, value, says", SERVICE_OUT_OF_RANGE)
def test_service_configs_refuse_a_value_out_of_range_naming_the_field(
        cls: type, name: str, value: object, says: str) -> None:
    with pytest.raises(ValueError) as err:
        cls(**{name: value})
    assert str(err.value).startswith(says), err.value


def test_service_defaults_and_the_zeros_that_mean_something_are_accepted() -> None:
    for cls in (GatewayConfig, RouterConfig, CacheConfig, AuthConfig, LaunchConfig,
                WorkerConfig):
        cls()
    GatewayConfig(port=0, processes=0, metrics_port=0, retry_after=0, cache_lookup_timeout=0,
                  auth_cache_ttl=0, grace_period=0, retry_before_first_token=0)
    RouterConfig(metrics_port=0, retry_backoff=0, kv_load_weight=0, affinity_bonus=0)
    WorkerConfig(max_waiting=0, torch_threads=0, metrics_port=0, log_level="debug")
    RouterConfig(overload_kv_usage=1.0)


@pytest.mark.parametrize("argv, says", [
    (["serve", "gateway", "--port", "70000"], "kvmesh serve gateway: port=70000"),
    (["serve", "router", "--policy", "fastest"], "kvmesh serve router: policy='fastest'"),
    (["serve", "cache", "--ttl", "0"], "kvmesh serve cache: ttl=0"),
    (["serve", "auth", "--max-concurrency", "0"], "kvmesh serve auth: max_concurrency=0"),
    (["up", "--workers", "0"], "kvmesh up: workers=0: must be above 0"),
    (["up", "--log-level", "loud"], "kvmesh up: log_level='loud'"),
    (["serve", "gateway", "--log-level", "debugg"], "kvmesh serve gateway: log_level='debugg'"),
])
def test_a_bad_service_setting_is_one_line_and_status_2(argv: list[str], says: str) -> None:
    done = subprocess.run([sys.executable, "-m", "kvmesh.cli", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(says) and done.stderr.count("\n") == 1, done.stderr


def test_a_router_whose_tokenizer_does_not_load_is_one_error_line_and_status_1(
        tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf")
    done = _serve("router", "--model", str(bad))
    _assert_one_error_log_line(done, "the tokenizer did not load", str(bad))


def test_a_gateway_whose_hosted_routers_tokenizer_does_not_load_is_one_error_line_and_status_1(
        tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf")
    done = subprocess.run(
        [sys.executable, "-m", "kvmesh.cli", "serve", "gateway", "--colocate-router", "1",
         "--nats-url", f"nats://127.0.0.1:{procs.free_port()}", "--port",
         str(procs.free_port())], env={**os.environ, "KVMESH_ROUTER_MODEL": str(bad)},
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    _assert_one_error_log_line(done, "the hosted router's tokenizer did not load", str(bad))


def test_every_name_a_config_holds_above_zero_is_one_of_its_numbers() -> None:
    for cls in (GatewayConfig, RouterConfig, CacheConfig, AuthConfig, LaunchConfig,
                WorkerConfig):
        numbers = {f.name for f in dataclasses.fields(cls)
                   if isinstance(getattr(cls(), f.name), int | float)}
        assert not cls.POSITIVE - numbers, cls.__name__
