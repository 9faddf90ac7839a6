"""CPU lists as Linux writes them, and the settings that take them: the worker's `engine_cpus`
and `kvmesh up --engine-cpus` (one set per worker)."""

from __future__ import annotations

import os

import pytest

from inference.worker_config import WorkerConfig
from kvmesh.config import ConfigError, LaunchConfig, load
from kvmesh.cpu_sets import parse_cpus, parse_groups, text


@pytest.mark.parametrize(("raw", "cpus"), [
    ("", ()), ("3", (3,)), ("3,11", (3, 11)), ("11,3,3", (3, 11)), ("2-4", (2, 3, 4)),
    ("0-1, 5", (0, 1, 5)), ("7-7", (7,)),
])
def test_parse_cpus_reads_linux_lists(raw: str, cpus: tuple[int, ...]) -> None:
    assert parse_cpus(raw) == cpus
    assert parse_cpus(text(cpus)) == cpus


@pytest.mark.parametrize("raw", ["x", "3-", "-1", "4-2", "1.5", "3;4"])
def test_parse_cpus_refuses_what_is_not_a_list(raw: str) -> None:
    with pytest.raises(ValueError, match="not a CPU list"):
        parse_cpus(raw)


def test_parse_groups_gives_one_set_per_worker() -> None:
    assert parse_groups("") == []
    assert parse_groups("3,11/4,12") == [(3, 11), (4, 12)]


def test_the_worker_takes_engine_cpus_from_its_flag_and_variable() -> None:
    assert load(WorkerConfig, ["--engine-cpus", "0"], env={}).engine_cpus == "0"
    assert load(WorkerConfig, [], env={"KVMESH_WORKER_ENGINE_CPUS": "0"}).engine_cpus == "0"
    assert load(WorkerConfig, [], env={}).engine_cpus == ""


@pytest.mark.parametrize(("argv", "says"), [
    (["--engine-cpus", "zero"], "engine_cpus: 'zero' is not a CPU list"),
    (["--engine-cpus", str(os.cpu_count() or 1)], "engine_cpus: CPU .* does not exist"),
    (["--engine-cpus", "0", "--tensor-parallel-size", "2"], "tensor_parallel_size"),
])
def test_the_worker_refuses_bad_engine_cpus_naming_them(argv: list[str], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        load(WorkerConfig, argv, env={})


@pytest.mark.parametrize(("argv", "says"), [
    (["--engine-cpus", "0/0"], r"2 CPU set\(s\) for 1 worker"),
    (["--engine-cpus", "0/", "--workers", "2"], "a worker's CPU set is empty"),
    (["--engine-cpus", "a"], "engine_cpus: 'a' is not a CPU list"),
    (["--engine-cpus", "0", "--tensor-parallel-size", "2"], "tensor_parallel_size"),
])
def test_kvmesh_up_refuses_bad_engine_cpus_naming_them(argv: list[str], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        load(LaunchConfig, argv, env={})


def test_kvmesh_up_takes_one_set_per_worker() -> None:
    cfg = load(LaunchConfig, ["--engine-cpus", "0/0", "--workers", "2"], env={})
    assert parse_groups(cfg.engine_cpus) == [(0,), (0,)]


def test_kvmesh_up_refuses_engine_cpus_that_leave_no_cpu_for_the_rest() -> None:
    """Every CPU this process may use given to the engine: nothing is moved, a clear error."""
    from kvmesh.cli.launcher import _place_engines

    before = os.sched_getaffinity(0)
    cfg = load(LaunchConfig, ["--engine-cpus", text(before)], env={})
    with pytest.raises(RuntimeError, match="leaves no CPU for the other processes"):
        _place_engines(cfg)
    assert os.sched_getaffinity(0) == before
