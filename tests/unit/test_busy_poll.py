"""Polling after a message (kvmesh/busy_poll.py): a touched loop polls without sleeping for its
window and then sleeps again; a window of 0 never polls; the engine's command pipe is read in a
loop for its window instead of waiting in `poll`; the step pipe's reader touches the loop;
`kvmesh up` gives its services the window it was told, else the default for its CPUs, its
polling processes and its engines' device, and each on-path service reads the setting from its
variable."""

from __future__ import annotations

import asyncio
import multiprocessing
import select
import threading
import time

import pytest

from inference.engine_pipe import CommandReader, StepReader, frame
from inference.worker_config import WorkerConfig
from kvmesh import busy_poll
from kvmesh.busy_poll import BusyPoll
from kvmesh.cli import launcher
from kvmesh.config import ConfigError, GatewayConfig, LaunchConfig, RouterConfig, load


def _recording_loop() -> tuple[asyncio.AbstractEventLoop, list[tuple[float, float | None]]]:
    """A selector loop that records (when, timeout) of every poll it makes."""
    loop = asyncio.SelectorEventLoop()
    selects: list[tuple[float, float | None]] = []
    real = loop._selector.select  # type: ignore[attr-defined]

    def select_(timeout: float | None = None):  # type: ignore[no-untyped-def]
        selects.append((time.monotonic(), timeout))
        return real(timeout)

    loop._selector.select = select_  # type: ignore[attr-defined]
    return loop, selects


def test_a_touched_loop_polls_for_its_window_then_sleeps() -> None:
    loop, selects = _recording_loop()
    poll = BusyPoll(0.1)

    async def main() -> None:
        poll.touch()
        await asyncio.sleep(1.0)  # a timer: a sleeping loop waits for it in one poll

    try:
        start = time.monotonic()
        loop.run_until_complete(main())
    finally:
        loop.close()
    during = [t for at, t in selects if start <= at < poll.until - 0.01]
    after = [t for at, t in selects if at > poll.until - 0.01]
    assert len(during) > 20 and all(t == 0 for t in during)  # polled, never slept
    assert after and max(t or 0 for t in after) > 0.5  # slept through the rest of the timer
    assert poll.task is None


def test_a_window_of_zero_never_polls() -> None:
    loop, selects = _recording_loop()
    poll = BusyPoll(0.0)

    async def main() -> None:
        poll.touch()
        await asyncio.sleep(0.1)

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    assert poll.task is None
    assert len(selects) < 5  # the timer's wait, not a loop of polls


def test_the_process_wide_poll_follows_install() -> None:
    async def touched() -> bool:
        busy_poll.touch()
        polling = busy_poll._process is not None and busy_poll._process.task is not None
        if polling:
            await busy_poll._process.task  # type: ignore[union-attr]
        return polling

    try:
        busy_poll.install(0.05)
        assert asyncio.run(touched())
        busy_poll.install(0.0)
        assert not asyncio.run(touched())
    finally:
        busy_poll.install(0.0)


def test_the_step_readers_frames_keep_the_loop_polling() -> None:
    frames: list[object] = []

    async def main() -> bool:
        reader = StepReader(frames.append, lambda: None)
        reader.data_received(frame({"step": 1}))
        task = busy_poll._process.task  # type: ignore[union-attr]
        if task is not None:
            await task
        return task is not None

    try:
        busy_poll.install(0.05)
        assert asyncio.run(main())
    finally:
        busy_poll.install(0.0)
    assert frames == [{"step": 1}]


class _CountingPoll:
    """`select.poll` that counts its waits."""

    def __init__(self) -> None:
        self.inner = select.poll()
        self.waits = 0

    def register(self, fd: int, mask: int) -> None:
        self.inner.register(fd, mask)

    def poll(self, *timeout: float) -> list[tuple[int, int]]:
        self.waits += 1
        return self.inner.poll(*timeout)


@pytest.mark.parametrize("window, waits", [(5.0, 0), (0.0, 1)])
def test_the_engines_wait_for_a_command_reads_in_a_loop_for_its_window(
        window: float, waits: int) -> None:
    read, write = multiprocessing.Pipe(duplex=False)
    reader = CommandReader(read, window)
    reader._poll = _CountingPoll()  # type: ignore[assignment]
    reader._poll.register(reader._fd, select.POLLIN)
    threading.Timer(0.1, write.send, args=("hello",)).start()
    assert reader.take(block=True) == ["hello"]
    assert reader._poll.waits == waits  # type: ignore[attr-defined]


def test_a_spin_gives_up_at_its_deadline() -> None:
    assert not busy_poll.spin_until(time.monotonic() + 0.02, lambda: False)
    assert busy_poll.spin_until(time.monotonic() + 10, lambda: True)


ON = busy_poll.AUTO_WINDOW


@pytest.mark.parametrize("cpus, mesh, window", [
    (2, {}, 0.0), (15, {}, 0.0), (16, {}, ON), (64, {}, ON),  # 1 gateway, router, worker, engine
    (16, {"gateways": 4}, 0.0), (28, {"gateways": 4}, ON),  # 4 gateways: 7 processes poll
    (16, {"gateways": 2, "hosted_router": True}, ON),  # the router in the gateways
    (16, {"workers": 2}, 0.0), (24, {"workers": 2}, ON)])  # each worker and its engine
def test_kvmesh_up_polls_by_default_only_with_cpus_to_spare(
        monkeypatch: pytest.MonkeyPatch, cpus: int, mesh: dict[str, object],
        window: float) -> None:
    monkeypatch.setattr(launcher.os, "sched_getaffinity", lambda _pid: set(range(cpus)))
    monkeypatch.setattr(launcher, "_engines_on_gpu", lambda: True)
    assert launcher._busy_poll(LaunchConfig(**mesh)) == window  # type: ignore[arg-type]
    assert launcher._busy_poll(LaunchConfig(busy_poll=0.0, **mesh)) == 0.0  # told: as told
    assert launcher._busy_poll(LaunchConfig(busy_poll=0.2, **mesh)) == 0.2
    monkeypatch.setattr(launcher, "_engines_on_gpu", lambda: False)  # a CPU engine's cores
    assert launcher._busy_poll(LaunchConfig(**mesh)) == 0.0  # type: ignore[arg-type]
    assert launcher._busy_poll(LaunchConfig(busy_poll=0.2, **mesh)) == 0.2


@pytest.mark.parametrize("env, gpu", [({"KVMESH_WORKER_DEVICE": "cpu"}, False),
                                      ({"KVMESH_DEVICE": "cuda"}, True),
                                      ({"KVMESH_DEVICE": "cuda:1"}, True),
                                      ({"KVMESH_WORKER_DEVICE": "cpu", "KVMESH_DEVICE": "cuda"},
                                       False)])
def test_the_engines_device_is_what_the_workers_are_told(
        monkeypatch: pytest.MonkeyPatch, env: dict[str, str], gpu: bool) -> None:
    for name in ("KVMESH_WORKER_DEVICE", "KVMESH_DEVICE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert launcher._engines_on_gpu() == gpu


def test_a_probe_that_cannot_run_means_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KVMESH_WORKER_DEVICE", "KVMESH_DEVICE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(launcher.sys, "executable", "/nonexistent/python")  # OSError
    assert launcher._engines_on_gpu() is False


def test_an_auto_device_is_what_torch_finds(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    for name in ("KVMESH_WORKER_DEVICE", "KVMESH_DEVICE"):
        monkeypatch.delenv(name, raising=False)
    assert launcher._engines_on_gpu() == torch.cuda.is_available()


@pytest.mark.parametrize("config", [GatewayConfig, RouterConfig, WorkerConfig])
def test_each_service_on_the_path_reads_its_window(config: type) -> None:
    assert load(config, env={}).busy_poll == 0.0  # served alone: off unless told
    assert load(config, env={"KVMESH_BUSY_POLL": "0.5"}).busy_poll == 0.5  # as kvmesh up sets
    assert load(config, ["--busy-poll", "0.25"], env={"KVMESH_BUSY_POLL": "0.5"}).busy_poll \
        == 0.25
    with pytest.raises(ConfigError, match="busy_poll"):
        load(config, ["--busy-poll", "-1"], env={})
