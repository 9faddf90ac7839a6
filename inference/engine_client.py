"""The worker's typed door to its engine: the engine runs in a child process (`engine_loop`),
so the model's steps and the worker's publishing never share a GIL.

Contract:
- `await EngineClient.start(spec, config, torch_threads, on_step, on_exit)` spawns the engine
  process and returns once it reports `EngineReady` (`client.ready`); it raises `EngineStartError`
  when the engine reports `EngineFailed` or dies while loading.
- Two one-way pipes, each owned by one thread of this process and kept blocking: a sender
  thread writes commands in order (so `add`, `abort` and `snapshot` never block the event loop
  and a slow engine step cannot stall the worker's publishing), and a reader thread reads and
  unpickles steps. No pipe is registered with the event loop: an event loop makes its file
  descriptors non-blocking, and a pickled message read half-way then fails.
- `add`, `add_embedding`, `abort` and `snapshot` queue a command and return at once.
- `on_step(step)` runs on the event loop for every `EngineStep`, in order, after `stats` took
  the step's counters (one `call_soon_threadsafe` per step).
- `on_exit(why)` runs once, on the loop, when the engine process is gone (crashed, killed, or
  stopped): the worker must then fail what it holds and report itself down.
- `stop()` asks the engine to exit and waits for it (killing it after `timeout`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import queue
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection

from inference.engine.config import EngineConfig
from inference.engine.embedding import PoolingParams
from inference.engine.sampling_params import SamplingParams
from inference.engine_loop import run as run_engine
from inference.engine_protocol import (
    Abort,
    AddEmbedding,
    AddRequest,
    Command,
    EngineFailed,
    EngineReady,
    EngineStep,
    Snapshot,
    Stop,
)

log = logging.getLogger("kvmesh.worker.engine")


class EngineStartError(RuntimeError):
    """The engine process could not load the model."""


class EngineClient:
    def __init__(self, proc: multiprocessing.process.BaseProcess, commands: Connection,
                 steps: Connection, ready: EngineReady, on_step: Callable[[EngineStep], None],
                 on_exit: Callable[[str], None]) -> None:
        self.proc = proc
        self.ready = ready
        self.stats = ready.stats  # the engine's counters as of its last step
        self._commands = commands
        self._steps = steps
        self._on_step = on_step
        self._on_exit = on_exit
        self._exited = False
        self._outbox: queue.SimpleQueue[Command | None] = queue.SimpleQueue()
        self._loop = asyncio.get_running_loop()
        self._threads = [
            threading.Thread(target=self._send_loop, name="engine-sender", daemon=True),
            threading.Thread(target=self._read_loop, name="engine-reader", daemon=True)]

    @classmethod
    async def start(cls, spec: str | None, config: EngineConfig, torch_threads: int,
                    on_step: Callable[[EngineStep], None],
                    on_exit: Callable[[str], None]) -> EngineClient:
        ctx = multiprocessing.get_context("spawn")  # no forked CUDA or event-loop state
        cmd_r, cmd_w = ctx.Pipe(duplex=False)
        step_r, step_w = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=run_engine, args=(spec, config, torch_threads, cmd_r, step_w),
                           name="kvmesh-engine", daemon=True)
        proc.start()
        cmd_r.close()
        step_w.close()
        first = await asyncio.to_thread(_first_message, step_r, proc)
        if isinstance(first, EngineFailed):
            proc.join(5)
            raise EngineStartError(first.message)
        client = cls(proc, cmd_w, step_r, first, on_step, on_exit)
        # Three threads share this process's GIL: a step waiting on the reader thread must not
        # wait out the default 5 ms switch interval behind the loop's work.
        sys.setswitchinterval(0.0005)
        for t in client._threads:
            t.start()
        return client

    # -- commands (loop thread; never block) -----------------------------------------------

    def add(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams) -> None:
        self._outbox.put(AddRequest(request_id, prompt_token_ids, params))

    def add_embedding(self, request_id: str, prompts: list[list[int]],
                      params: PoolingParams) -> None:
        self._outbox.put(AddEmbedding(request_id, prompts, params))

    def abort(self, request_id: str) -> None:
        self._outbox.put(Abort(request_id))

    def snapshot(self) -> None:
        self._outbox.put(Snapshot())

    async def stop(self, timeout: float = 10.0) -> None:
        self._outbox.put(Stop())
        self._outbox.put(None)
        await asyncio.to_thread(self.proc.join, timeout)
        if self.proc.is_alive():
            self.proc.kill()
            await asyncio.to_thread(self.proc.join, 5)
        self._gone("stopped")

    def _send_loop(self) -> None:
        while (cmd := self._outbox.get()) is not None:
            try:
                self._commands.send(cmd)
            except (OSError, ValueError) as exc:
                log.warning("cannot send to the engine process: %s", exc)
                return  # the engine is gone; the reader reports it

    # -- steps ------------------------------------------------------------------------------

    def _read_loop(self) -> None:
        """Reader thread: each step, unpickled here, is handed to the loop in order."""
        try:
            while True:
                step = self._steps.recv()
                self._loop.call_soon_threadsafe(self._deliver, step)
        except (EOFError, OSError):
            self.proc.join(1)
            code = self.proc.exitcode
            why = (f"the engine process exited (code {code})" if code is not None
                   else "the engine process closed its pipe")
            with contextlib.suppress(RuntimeError):  # the loop may be closed at shutdown
                self._loop.call_soon_threadsafe(self._gone, why)

    def _deliver(self, step: EngineStep) -> None:
        """Hot path (loop thread): once per engine step."""
        self.stats = step.stats
        self._on_step(step)

    def _gone(self, why: str) -> None:
        if self._exited:
            return
        self._exited = True
        self._outbox.put(None)
        self._on_exit(why)


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
