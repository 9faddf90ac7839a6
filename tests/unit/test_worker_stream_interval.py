"""A worker with `stream_interval` 3 sends a request's chunks every third token, numbered in
order, the first token at once and usage on the last; with 1 it sends every token. The
worker's real `_on_step` on engine steps as the engine process sends them (no engine runs)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from inference.engine.engine_stats import EngineStats
from inference.engine.outputs import StepOutput, Usage
from inference.engine_protocol import EngineStep
from inference.telemetry import GenerationTelemetry
from inference.worker import Active, Worker
from inference.worker_config import WorkerConfig
from kvmesh.wire import Chunk, Deltas

STATS = EngineStats(0, 0, 1, 1, 0, 0, 0, 0, 0)


def _run(interval: int, tokens: int) -> list[list[Chunk]]:
    """Feed `tokens` one-token steps of request "a" (the last one finishing it) to a worker;
    the chunks of each frame it queued, frame by frame."""
    worker = _worker(interval)
    for i in range(tokens):
        last = i == tokens - 1
        worker._on_step(EngineStep(
            [StepOutput("a", 0, [100 + i], f"w{i} ", None, "length" if last else None,
                        Usage(5, tokens, 0) if last else None)],
            STATS, [], time.time_ns(), 0.001))
    return _frames(worker)


def _worker(interval: int) -> Worker:
    """A worker holding request "a", with what `heartbeat()` and a crashed step's telemetry
    read (no engine process, no NATS)."""
    worker = Worker(WorkerConfig(worker_id="w-si", stream_interval=interval))
    worker.engine = SimpleNamespace(  # type: ignore[assignment]
        stats=STATS, ready=SimpleNamespace(limits=SimpleNamespace(max_model_len=64),
                                           block_size=16, pooling=None))
    worker.telemetry = GenerationTelemetry("m", worker.worker_id, lambda: STATS)
    worker.active["a"] = Active("inbox", want_logprobs=False)
    return worker


def _frames(worker: Worker) -> list[list[Chunk]]:
    """The chunks of each `Deltas` frame the worker queued since the last call, in order."""
    return [frame.chunks for frame in _deltas(worker)]


def _deltas(worker: Worker) -> list[Deltas]:
    """Each `Deltas` frame the worker queued since the last call, in order."""
    frames = []
    while not worker._out.empty():
        item = worker._out.get_nowait()
        if isinstance(item, tuple) and isinstance(item[1], Deltas):
            frames.append(item[1])
    return frames


@pytest.mark.parametrize(("interval", "sizes"), [(3, [1, 3, 3, 3]), (1, [1] * 10)])
def test_chunks_go_every_interval_tokens_in_order_with_usage_last(
        interval: int, sizes: list[int]) -> None:
    frames = _run(interval, 10)
    chunks = [c for f in frames for c in f]
    assert [len(c.token_ids) for c in chunks] == sizes
    assert [c.seq for c in chunks] == list(range(len(sizes)))
    assert [t for c in chunks for t in c.token_ids] == list(range(100, 110))
    assert "".join(c.text for c in chunks) == "".join(f"w{i} " for i in range(10))
    assert [c.usage is not None for c in chunks] == [False] * (len(sizes) - 1) + [True]
    assert chunks[-1].finish_reason == "length"


def test_a_cancelled_request_drops_what_it_held() -> None:
    worker = _worker(4)
    for i in range(2):
        worker._on_step(EngineStep([StepOutput("a", 0, [i], "x")], STATS, [],
                                   time.time_ns(), 0.001))
    held = worker.active["a"].held
    assert [c.token_ids for c in held.chunks] == [[1]]  # the first went at once
    worker.active.pop("a")  # what `_cancel` does; nothing of it is sent again
    worker._on_step(EngineStep([StepOutput("a", 0, [2], "x")], STATS, [],
                               time.time_ns(), 0.001))
    assert [[c.token_ids for c in f] for f in _frames(worker)] == [[[0]]]


def test_the_setting_is_refused_at_zero() -> None:
    with pytest.raises(ValueError, match="stream_interval"):
        WorkerConfig(stream_interval=0)


def test_a_crashed_engine_fails_the_request_and_sends_nothing_it_held() -> None:
    worker = _worker(4)
    for i in range(2):
        worker._on_step(EngineStep([StepOutput("a", 0, [i], "x")], STATS, [],
                                   time.time_ns(), 0.001))
    assert [[c.token_ids for c in f] for f in _frames(worker)] == [[[0]]]  # [1] is held
    worker._on_step(EngineStep([], STATS, crashed="engine failed: boom"))
    frames = _deltas(worker)
    assert [f.chunks for f in frames] == [[]]
    assert [(e.request_id, e.error.code) for e in frames[0].errors] == [
        ("a", "engine_error")]
    assert worker.active == {}
