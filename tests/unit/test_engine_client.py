"""The worker's door to its engine process: commands written and steps read by the event loop
itself (inference/engine_pipe.py), against a real engine process on the tiny preset."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
import uvloop

from inference.engine.config import EngineConfig
from inference.engine_client import EngineClient
from inference.engine_pipe import StepReader, frame
from inference.engine_protocol import EngineStep

from .engine_driver import greedy


class Steps:
    """Every step the client delivers, and a way to wait for a condition on them."""

    def __init__(self) -> None:
        self.steps: list[EngineStep] = []
        self.changed = asyncio.Event()
        self.gone: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on_step(self, step: EngineStep) -> None:
        self.steps.append(step)
        self.changed.set()

    def on_exit(self, why: str) -> None:
        if not self.gone.done():
            self.gone.set_result(why)

    async def until(self, done, timeout: float = 60.0) -> None:
        async def wait() -> None:
            while not done():
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(wait(), timeout)

    def tokens(self, rid: str) -> list[int]:
        return [t for s in self.steps for r in s.outputs if r.request_id == rid
                for t in r.token_ids]

    def finished(self, rid: str) -> str | None:
        return next((r.finish_reason for s in self.steps for r in s.outputs
                     if r.request_id == rid and r.finish_reason), None)

    def rejected(self, rid: str) -> bool:
        return any(r == rid for s in self.steps for r, _ in s.rejected)


@pytest.fixture(params=["asyncio", "uvloop", "uvloop-overlapped"])
def run(request):
    """Run a test body on each loop a worker may run on (their pipe transports differ), and
    once with the engine's overlapped loop on, as on a GPU (where a call that hands out a
    first token leaves the sampling of the step it launched to the next call)."""
    runner = asyncio.run if request.param == "asyncio" else uvloop.run
    overlap = request.param.endswith("overlapped")
    return lambda body: runner(_with_engine(body, overlap))


async def _with_engine(body, overlap: bool = False) -> None:
    steps = Steps()
    cfg = EngineConfig(device="cpu", dtype="float32", block_size=4, num_kv_blocks=64,
                       max_model_len=128, async_scheduling=overlap)
    client = await EngineClient.start("dummy:tiny", cfg, 1, steps.on_step, steps.on_exit)
    try:
        await body(client, steps)
    finally:
        if client.proc.is_alive():
            await client.stop()


def test_requests_sent_back_to_back_each_finish_with_their_tokens(run) -> None:
    run(_requests_sent_back_to_back_each_finish_with_their_tokens)


async def _requests_sent_back_to_back_each_finish_with_their_tokens(client: EngineClient,
        steps: Steps) -> None:
    for i in range(3):  # three commands in one loop turn: written in order, none lost
        client.add(f"r{i}", [3 + i, 4, 5, 6], greedy(5))
    await steps.until(lambda: all(steps.finished(f"r{i}") for i in range(3)))
    assert [len(steps.tokens(f"r{i}")) for i in range(3)] == [5, 5, 5]
    assert client.stats is steps.steps[-1].stats


def test_a_command_larger_than_the_pipe_buffer_arrives_whole(run) -> None:
    run(_a_command_larger_than_the_pipe_buffer_arrives_whole)


async def _a_command_larger_than_the_pipe_buffer_arrives_whole(client: EngineClient,
        steps: Steps) -> None:
    client.add("huge", list(range(3, 40_000)), greedy(5))  # ~100 KiB pickled: over 64 KiB
    client.add("small", [3, 4, 5, 6], greedy(3))  # after it, in the same frame stream
    await steps.until(lambda: steps.rejected("huge") and steps.finished("small"))
    assert len(steps.tokens("small")) == 3


def test_an_aborted_request_stops_before_its_max_tokens(run) -> None:
    run(_an_aborted_request_stops_before_its_max_tokens)


async def _an_aborted_request_stops_before_its_max_tokens(client: EngineClient,
        steps: Steps) -> None:
    client.add("long", [3, 4, 5, 6], greedy(100))
    await steps.until(lambda: len(steps.tokens("long")) >= 2)
    client.abort("long")
    client.add("after", [3, 4, 5, 6], greedy(2))
    await steps.until(lambda: steps.finished("after"))
    assert steps.finished("long") == "abort" and len(steps.tokens("long")) < 100


def test_a_killed_engine_process_reports_exit_once(run) -> None:
    run(_a_killed_engine_process_reports_exit_once)


async def _a_killed_engine_process_reports_exit_once(client: EngineClient,
        steps: Steps) -> None:
    os.kill(client.proc.pid, signal.SIGKILL)
    why = await asyncio.wait_for(steps.gone, 30)
    assert f"code {-signal.SIGKILL}" in why
    client.add("late", [3, 4], greedy(1))  # a command after the end is dropped, not raised


def test_frames_split_at_any_byte_come_out_whole_and_in_order() -> None:
    got: list[object] = []
    objs = [{"a": 1}, list(range(5000)), "x" * 70_000, None]
    data = b"".join(frame(o) for o in objs)
    for cut in (1, 3, 4, 5, 4096, 65_536):
        got.clear()
        reader = StepReader(got.append, lambda: None)
        for i in range(0, len(data), cut):
            reader.data_received(data[i:i + cut])
        assert got == objs


def test_an_engine_on_a_cpu_it_cannot_have_fails_to_start_saying_why() -> None:
    """`cpus` outside the machine (or a container's cpuset): the engine process reports the
    failure as it reports any failure to load, and the worker's start raises with it."""
    from inference.engine_client import EngineStartError

    async def start() -> None:
        cfg = EngineConfig(device="cpu", dtype="float32", block_size=4, num_kv_blocks=64,
                           max_model_len=128)
        await EngineClient.start("dummy:tiny", cfg, 1, lambda step: None, lambda why: None,
                                 cpus=((os.cpu_count() or 1) + 7,))

    with pytest.raises(EngineStartError, match="OSError"):
        asyncio.run(start())


def test_an_engine_given_cpus_runs_on_them() -> None:
    cpu = max(os.sched_getaffinity(0))

    async def start() -> None:
        cfg = EngineConfig(device="cpu", dtype="float32", block_size=4, num_kv_blocks=64,
                           max_model_len=128)
        client = await EngineClient.start("dummy:tiny", cfg, 1, lambda step: None,
                                          lambda why: None, cpus=(cpu,))
        try:
            assert os.sched_getaffinity(client.proc.pid) == {cpu}
        finally:
            await client.stop()

    asyncio.run(start())
