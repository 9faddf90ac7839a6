"""A worker publishes a step's tokens before it does the step's telemetry (issue 12: a first
token must not wait for bookkeeping), and a heartbeat once a step leaves it idle, after that
step's frames, against a real nats-server."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import nats

from inference.engine.engine_stats import EngineStats
from inference.engine.outputs import StepOutput, Usage
from inference.engine_protocol import EngineStep
from inference.telemetry import GenerationTelemetry
from inference.worker import Active, Worker
from inference.worker_config import WorkerConfig
from kvmesh import wire
from kvmesh.wire import Deltas, Heartbeat, TokenizedRequest


class _Recorder(GenerationTelemetry):
    """The worker's real telemetry, noting what NATS still held unsent when a step reached it."""

    def __init__(self, worker: Worker, stats: EngineStats) -> None:
        super().__init__("m", worker.worker_id, lambda: stats)
        self.worker = worker
        self.unsent_at_step: list[int] = []
        self.arrivals: list[float] = []

    def on_step(self, step: EngineStep, arrived: float) -> None:
        assert self.worker.nc is not None
        self.unsent_at_step.append(self.worker.nc.pending_data_size)
        self.arrivals.append(arrived)
        super().on_step(step, arrived)


async def test_a_steps_frames_are_on_the_socket_before_its_telemetry_runs(nats_url: str) -> None:
    worker = Worker(WorkerConfig(nats_url=nats_url, worker_id="w-order"))
    listener = await nats.connect(nats_url)
    await worker.connect()
    publisher = asyncio.create_task(worker._publisher())
    try:
        got: asyncio.Queue[Deltas | Heartbeat] = asyncio.Queue()

        async def on_msg(msg: nats.aio.msg.Msg) -> None:
            frame = wire.decode(msg.data, Deltas, Heartbeat)
            # The session's NATS carries other tests' workers' heartbeats too.
            if not isinstance(frame, Heartbeat) or frame.worker_id == "w-order":
                got.put_nowait(frame)

        inbox = listener.new_inbox()
        await listener.subscribe(inbox, cb=on_msg)
        await listener.subscribe(wire.HEARTBEAT, cb=on_msg)
        await listener.flush()
        stats = EngineStats(0, 0, 1, 1, 0, 0, 0, 0, 0)
        # What `heartbeat()` reads of the engine process's client (none runs here).
        worker.engine = SimpleNamespace(  # type: ignore[assignment]
            stats=stats, ready=SimpleNamespace(limits=SimpleNamespace(max_model_len=64),
                                               block_size=16, pooling=None))
        recorder = worker.telemetry = _Recorder(worker, stats)
        for rid, ids in (("a", [1, 2, 3]), ("b", [1, 2, 3, 4])):
            req = TokenizedRequest(request_id=rid, model="m", reply_to=inbox,
                                   prompt_token_ids=ids)
            recorder.admitted(req, recorder.start(req))
            worker.active[rid] = Active(inbox, want_logprobs=False)
        before = time.monotonic()
        worker._on_step(EngineStep([StepOutput("a", 0, [7], "x")], stats,
                                   [("a", 3)], time.time_ns(), 0.001))
        worker._on_step(EngineStep([StepOutput("a", 0, [8], "y", None, "length", Usage(3, 2, 0)),
                                    StepOutput("b", 0, [9], "z", None, "length", Usage(4, 1, 0))],
                                   stats, [("b", 4)], time.time_ns(), 0.001))
        frames = [await asyncio.wait_for(got.get(), 10) for _ in range(2)]
        beat = await asyncio.wait_for(got.get(), 10)  # the two finished: it is idle
        await asyncio.wait_for(worker._out.join(), 10)
        assert all(isinstance(f, Deltas) for f in frames)
        assert [[(c.request_id, c.text) for c in f.chunks] for f in frames] == \
            [[("a", "x")], [("a", "y"), ("b", "z")]]  # type: ignore[union-attr]
        assert isinstance(beat, Heartbeat) and beat.worker_id == "w-order" and beat.running == 0
        assert recorder.unsent_at_step == [0, 0]  # each step's frame was written first
        assert all(before <= t <= time.monotonic() for t in recorder.arrivals)
        assert recorder.requests == {} and worker.active == {}  # both finished
    finally:
        publisher.cancel()
        await listener.close()
        assert worker.nc is not None
        await worker.nc.close()
