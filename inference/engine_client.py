"""The worker's typed door to its engine: the engine runs in a child process (`engine_loop`),
so the model's steps and the worker's publishing never share a GIL.

Contract:
- `await EngineClient.start(spec, config, torch_threads, on_step, on_exit, cpus, busy_poll,
  log_level)` spawns the engine process (on the CPUs `cpus` when given: kvmesh/cpu_sets.py;
  polling its pipe `busy_poll` seconds before it sleeps: kvmesh/busy_poll.py; logging as the
  worker does, JSON lines on the stderr it shares, at `log_level`) and returns once it
  reports `EngineReady` (`client.ready`); it raises `EngineStartError` when the engine reports
  `EngineFailed` or dies while loading.
- Two one-way pipes whose worker ends the event loop runs itself (inference/engine_pipe.py):
  commands are written at once from the loop, in order, never blocking it (what a busy engine
  cannot take yet is buffered and written as it reads), and steps are read and unpickled on the
  loop as they arrive. No thread stands between the loop and the engine: a thread hand-off
  cost a wake-up and a wait for the GIL on every request and every step.
- `add`, `add_embedding`, `abort`, `snapshot` and `probe` send a command and return at once.
- `on_step(step)` runs on the event loop for every `EngineStep`, in order, after `stats` took
  the step's counters.
- `on_exit(why)` runs once, on the loop, when the engine process is gone (crashed, killed, or
  stopped): the worker must then fail what it holds and report itself down.
- `stop()` asks the engine to exit and waits for it (killing it after `timeout`).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection

from inference.engine.config import EngineConfig
from inference.engine.embedding import PoolingParams
from inference.engine.sampling_params import SamplingParams
from inference.engine_loop import run as run_engine
from inference.engine_pipe import CommandWriter, StepReader
from inference.engine_protocol import (
    Abort,
    AddEmbedding,
    AddRequest,
    EngineFailed,
    EngineReady,
    EngineStep,
    Probe,
    Snapshot,
    Stop,
)

log = logging.getLogger("kvmesh.worker.engine")


class EngineStartError(RuntimeError):
    """The engine process could not load the model."""


class EngineClient:
    def __init__(self, proc: multiprocessing.process.BaseProcess, ready: EngineReady,
                 on_step: Callable[[EngineStep], None], on_exit: Callable[[str], None]) -> None:
        self.proc = proc
        self.ready = ready
        self.stats = ready.stats  # the engine's counters as of its last step
        self._on_step = on_step
        self._on_exit = on_exit
        self._exited = False
        self._commands: CommandWriter | None = None
        self._steps: StepReader | None = None

    @classmethod
    async def start(cls, spec: str | None, config: EngineConfig, torch_threads: int,
                    on_step: Callable[[EngineStep], None],
                    on_exit: Callable[[str], None], cpus: tuple[int, ...] = (),
                    busy_poll: float = 0.0, log_level: str = "INFO") -> EngineClient:
        ctx = multiprocessing.get_context("spawn")  # no forked CUDA or event-loop state
        cmd_r, cmd_w = ctx.Pipe(duplex=False)
        step_r, step_w = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=run_engine,
                           args=(spec, config, torch_threads, cmd_r, step_w, cpus, busy_poll,
                                 log_level),
                           name="kvmesh-engine", daemon=True)
        proc.start()
        cmd_r.close()
        step_w.close()
        first = await asyncio.to_thread(_first_message, step_r, proc)
        if isinstance(first, EngineFailed):
            proc.join(5)
            raise EngineStartError(first.message)
        client = cls(proc, first, on_step, on_exit)
        client._commands = await CommandWriter.open(cmd_w)
        client._steps = await StepReader.open(step_r, client._deliver, client._closed)
        # Other threads of this process (the span exporter, the metrics server) must not keep
        # the loop waiting for the GIL the default 5 ms when a step arrives.
        sys.setswitchinterval(0.0005)
        return client

    # -- commands (loop thread; never block) -----------------------------------------------

    def add(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams) -> None:
        self._send(AddRequest(request_id, prompt_token_ids, params))

    def add_embedding(self, request_id: str, prompts: list[list[int]],
                      params: PoolingParams) -> None:
        self._send(AddEmbedding(request_id, prompts, params))

    def abort(self, request_id: str) -> None:
        self._send(Abort(request_id))

    def snapshot(self) -> None:
        self._send(Snapshot())

    def probe(self) -> None:
        """Ask for a step at once (`Probe`): one arrives when the engine runs."""
        self._send(Probe())

    def _send(self, cmd: object) -> None:
        assert self._commands is not None, "the engine is not started"
        if not self._commands.send(cmd):
            log.warning("cannot send to the engine process: its pipe is closed")

    async def stop(self, timeout: float = 10.0) -> None:
        if self._commands is not None:
            self._commands.send(Stop())
            self._commands.close()
        await asyncio.to_thread(self.proc.join, timeout)
        if self.proc.is_alive():
            self.proc.kill()
            await asyncio.to_thread(self.proc.join, 5)
        self._gone("stopped")

    # -- steps ------------------------------------------------------------------------------

    def _deliver(self, step: EngineStep) -> None:
        """Hot path (loop thread): once per engine step."""
        self.stats = step.stats
        self._on_step(step)

    def _closed(self) -> None:
        """The engine's end of the step pipe closed: it exited (or is exiting)."""
        task = asyncio.ensure_future(asyncio.to_thread(self.proc.join, 1))
        task.add_done_callback(lambda _: self._gone(_exit_reason(self.proc)))

    def _gone(self, why: str) -> None:
        if self._exited:
            return
        self._exited = True
        if self._commands is not None:
            self._commands.close()
        if self._steps is not None:
            self._steps.close()
        self._on_exit(why)


def _exit_reason(proc: multiprocessing.process.BaseProcess) -> str:
    code = proc.exitcode
    return (f"the engine process exited (code {code})" if code is not None
            else "the engine process closed its pipe")


def _first_message(conn: Connection,
                   proc: multiprocessing.process.BaseProcess) -> EngineReady | EngineFailed:
    """Wait for the engine's first word, watching that it does not die while loading."""
    while not conn.poll(0.5):
        if not proc.is_alive():
            return EngineFailed(f"the engine process died while loading (code {proc.exitcode})")
    try:
        msg = conn.recv()
    except EOFError:
        return EngineFailed(f"the engine process died while loading (code {proc.exitcode})")
    if not isinstance(msg, EngineReady | EngineFailed):
        return EngineFailed(f"the engine process sent {type(msg).__name__} before ready")
    return msg
