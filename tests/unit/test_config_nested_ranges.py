"""The range check reaches into a nested config: the worker's engine settings are refused as the
worker's own are (no negative numbers, none non-finite), named, in one line with status 2."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from inference.engine.config import EngineConfig
from inference.worker_config import WorkerConfig
from kvmesh.cli import procs
from kvmesh.config import ConfigError, Ranged, load

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class _Inner:
    pause: float = 1.0
    tries: int = 1


@dataclass(frozen=True)
class _Outer(Ranged):
    inner: _Inner = field(default_factory=_Inner)


@pytest.mark.parametrize("inner, says", [
    (_Inner(pause=-0.5), "pause=-0.5: must be a finite number, not negative"),
    (_Inner(pause=math.nan), "pause=nan: must be a finite number"),
    (_Inner(tries=-1), "tries=-1: must be a finite number, not negative"),
])
def test_a_nested_configs_number_out_of_range_is_refused_naming_it(
        inner: _Inner, says: str) -> None:
    with pytest.raises(ValueError) as err:
        _Outer(inner)
    assert str(err.value).startswith(says), err.value


def test_a_negative_engine_seed_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^seed=-1: must be at least 0"):
        EngineConfig(seed=-1)
    with pytest.raises(ConfigError, match=r"^seed=-1: "):
        load(WorkerConfig, ["--seed", "-1"], env={})
    with pytest.raises(ConfigError, match=r"^seed=-3: "):
        load(WorkerConfig, [], env={"KVMESH_WORKER_SEED": "-3"})
    assert load(WorkerConfig, ["--seed", "0"], env={}).engine.seed == 0


def test_kvmesh_serve_worker_refuses_a_negative_seed_in_one_line_with_status_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kvmesh.cli", "serve", "worker", "--seed", "-1",
         "--nats-url", f"nats://127.0.0.1:{procs.free_port()}", "--metrics-port", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("kvmesh serve worker: seed=-1: "), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
