"""`kvmesh up`'s own settings: what it refuses before it starts anything (one line, status 2),
and the /metrics ports it gives its services."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kvmesh.config import ConfigError, LaunchConfig, load
from tests.integration.helpers import free_ports

ROOT = Path(__file__).resolve().parents[2]


def _up(state: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """`kvmesh up *flags` on free ports and its own state dir (the flags win), so a build that
    lets a bad setting through starts a mesh that disturbs nothing, and stops soon."""
    (port, nats, redis), metrics = free_ports(3, run=6)
    own = ["--state-dir", str(state), "--port", str(port), "--nats-port", str(nats),
           "--redis-port", str(redis), "--metrics-port", str(metrics), "--ready-timeout", "5"]
    return subprocess.run([sys.executable, "-m", "kvmesh.cli", "up", *own, *flags], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("flag", ["--port", "--nats-port", "--redis-port"])
def test_port_zero_is_refused_in_one_line_with_status_2(flag: str, tmp_path: Path) -> None:
    done = _up(tmp_path, flag, "0")
    name = flag.removeprefix("--").replace("-", "_")
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"kvmesh up: {name}=0: must be above 0\n"


def test_metrics_ports_follow_the_base_one_per_service() -> None:
    from kvmesh.config import MetricsPorts

    cfg = LaunchConfig(metrics_port=9101, workers=2, gateways=3)
    assert cfg.metrics_ports() == MetricsPorts(router=9101, workers=(9102, 9103), auth=9104,
                                               cache=9105, gateways=(9106, 9107, 9108))


def test_metrics_port_zero_turns_every_services_metrics_off() -> None:
    ports = LaunchConfig(metrics_port=0, workers=2, gateways=2).metrics_ports()
    assert ports.all() == [0] * 7


def test_a_metrics_port_whose_derived_ports_pass_65535_is_refused_naming_them() -> None:
    with pytest.raises(ConfigError, match=r"^metrics_port=65530: .* ports 65530\.\.65536 "):
        load(LaunchConfig, ["--metrics-port", "65530", "--workers", "2", "--gateways", "2"],
             env={})
    LaunchConfig(metrics_port=65529, workers=2, gateways=2)  # the last one is 65535


def test_a_metrics_port_too_high_for_the_mesh_stops_kvmesh_up_at_once(tmp_path: Path) -> None:
    done = _up(tmp_path, "--metrics-port", "65534")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("kvmesh up: metrics_port=65534: ")
    assert done.stderr.count("\n") == 1, done.stderr


@pytest.mark.parametrize("endpoint", ["notaurl", "localhost:4318", "ftp://host:4318",
                                      "http://", "http://[::1"])
def test_an_otlp_endpoint_that_is_no_http_url_is_refused(endpoint: str) -> None:
    with pytest.raises(ConfigError, match=r"^otlp_endpoint: must be a URL starting with http"):
        load(LaunchConfig, ["--otlp-endpoint", endpoint], env={})


@pytest.mark.parametrize("endpoint", ["", "http://jaeger:4318", "https://otlp.example.com/",
                                      "http://[::1]:4318"])
def test_an_http_otlp_endpoint_or_none_is_accepted(endpoint: str) -> None:
    assert LaunchConfig(otlp_endpoint=endpoint).otlp_endpoint == endpoint


def test_a_bad_otlp_endpoint_stops_kvmesh_up_in_one_line(tmp_path: Path) -> None:
    done = _up(tmp_path, "--otlp-endpoint", "notaurl")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("kvmesh up: otlp_endpoint: ")
    assert done.stderr.count("\n") == 1, done.stderr
