"""The engine process: one `LLMEngine`, driven by commands from its worker over a pipe.

Contract:
- `run(spec, config, torch_threads, commands, steps, cpus, busy_poll)` is the process's
  target: commands come in on one pipe, steps go out on the other. With `cpus` it first moves
  itself onto those CPUs (every thread it starts later inherits them) and uses at most that
  many torch threads. It loads the model, sends `EngineReady` (or `EngineFailed` and returns),
  starts preparing constrained decoding in a thread (`Grammars.warm`), then loops: take every
  pending command, run one step when any request is unfinished, send one `EngineStep` when the
  step produced anything (or a `Probe` asked for one).
  With nothing to do it polls the pipe `busy_poll` seconds, then blocks on it, so an idle
  engine costs no CPU once that much time has passed (kvmesh/busy_poll.py).
- The worker owns this process's life: the loop ends on `Stop` or when the pipe closes (the
  worker exited or was killed), never on a signal; SIGINT and SIGTERM sent to the worker's
  process group are ignored here so a draining worker can still finish its requests.
- A step that raises aborts every request and reports `crashed`; the loop goes on serving
  (with tensor parallelism it ends instead: the other ranks may wait in that step's
  collectives, so the worker exits and the router fails over).
- Tensor parallelism: this process is rank 0 and starts the other ranks while loading
  (inference/engine/tp_launch.py); they stop when the loop ends, and a rank that dies ends
  this process (exit status `tp_launch.RANK_DIED`), which the worker sees as its engine gone.
- Hot path: between two steps this process does only the work the worker cannot do without the
  engine (token text of logprobs); the text of outputs without stop strings
  (inference/output_text.py), chunk building, encoding and publishing happen in the worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from multiprocessing.connection import Connection

from inference.engine import tp_launch
from inference.engine.config import EngineConfig
from inference.engine.engine import LLMEngine
from inference.engine.errors import RequestRejected
from inference.engine.tokenizer import Tokenizer
from inference.engine_pipe import CommandReader, dumps
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
from kvmesh import gc_heap
from telemetry.logs import setup_logging

log = logging.getLogger("kvmesh.engine")


def run(spec: str | None, config: EngineConfig, torch_threads: int, commands: Connection,
        steps: Connection, cpus: tuple[int, ...] = (), busy_poll: float = 0.0,
        log_level: str = "INFO") -> None:
    # its log lines go where the worker's go (the stderr it inherits), in the same shape
    setup_logging("worker", log_level)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        engine = _load(spec, config, torch_threads, cpus)
    except Exception as exc:  # reported to the worker, which exits with it
        steps.send(EngineFailed(f"{type(exc).__name__}: {exc}"))
        return
    gc_heap.freeze()  # the loaded model and imports: never scanned again
    steps.send(ready_message(engine))
    threading.Thread(target=_warm_grammars, args=(engine,), name="grammar-warm",
                     daemon=True).start()
    try:
        with contextlib.suppress(EOFError, BrokenPipeError, ConnectionResetError):
            # until Stop, or the worker is gone
            EngineLoop(engine, commands, steps, busy_poll).run()
    finally:
        tp_launch.shutdown()  # the other tensor-parallel ranks, if any


def ready_message(engine: LLMEngine) -> EngineReady:
    return EngineReady(engine.limits, engine.config.block_size, engine.stats(),
                       str(engine.device), str(engine.dtype).removeprefix("torch."),
                       engine.dtype_reason, engine.embedder.pooling, engine.tokenizer,
                       engine.eos_ids)


def _warm_grammars(engine: LLMEngine) -> None:
    """Constrained decoding's one-time costs, paid beside the loop rather than by the first
    constrained request's whole batch (grammar.py)."""
    try:
        engine.grammars.warm()
    except Exception:  # a tokenizer llguidance cannot read fails its requests later, clearly
        log.warning("could not prepare constrained decoding", exc_info=True)


def _load(spec: str | None, config: EngineConfig, torch_threads: int,
          cpus: tuple[int, ...] = ()) -> LLMEngine:
    """The engine, on `cpus` when given (an OSError, as for a CPU outside this container's
    cpuset, is reported to the worker like any other failure to load)."""
    if cpus:  # before torch starts its threads: they inherit the set
        os.sched_setaffinity(0, cpus)
        torch_threads = min(torch_threads or len(cpus), len(cpus))
    import torch

    if torch_threads > 0:
        torch.set_num_threads(torch_threads)
    return LLMEngine.from_model(spec, config)


class EngineLoop:
    def __init__(self, engine: LLMEngine, commands: Connection, steps: Connection,
                 busy_poll: float = 0.0) -> None:
        """Drives `engine`, which from now on leaves the text of outputs without stop strings
        to the worker (inference/output_text.py): per-sequence work off this process; and
        compiles new grammars off its thread (`LLMEngine.compile_aside`)."""
        self.engine = engine
        engine.detokenize = False
        engine.compile_aside = True  # a new grammar compiles beside the others' steps
        self.commands = commands
        self.steps = steps
        self.stopped = False
        self.want_snapshot = False
        self.probed = False  # a `Probe` came: the next step goes out even if empty
        self.busy_poll = busy_poll
        self.reader: CommandReader  # made by `run`: a loop driven by hand (tests) has no pipe

    def run(self) -> None:
        engine = self.engine
        self.reader = CommandReader(self.commands, self.busy_poll)
        while not self.stopped:
            busy = engine.has_unfinished()
            rejected = self._take_commands(block=not busy)
            if self.stopped:
                return
            step = self._step() if engine.has_unfinished() else EngineStep([], engine.stats())
            step.rejected = rejected + engine.take_failures()
            step.embeddings = engine.embedder.take_outputs()
            step.stored, step.evicted = engine.take_kv_events()
            if self.want_snapshot:
                self.want_snapshot = False
                step.snapshot = list(engine.kv.cached_hashes())
            # `prefills`: a prompt's first step has no tokens yet with the overlapped loop,
            # and the worker times its queue by that step.
            if (step.outputs or step.prefills or step.rejected or step.crashed or step.stored
                    or step.evicted or step.snapshot is not None or step.embeddings
                    or self.probed):
                self.probed = False
                self.steps.send_bytes(dumps(step))  # hot path: see engine_pipe.dumps

    def _take_commands(self, block: bool) -> list[tuple[str, RequestRejected]]:
        """Apply every pending command; wait for one first when `block` (idle)."""
        rejected: list[tuple[str, RequestRejected]] = []
        for cmd in self.reader.take(block):
            if isinstance(cmd, AddRequest | AddEmbedding):
                try:
                    self._add(cmd)
                except RequestRejected as exc:
                    rejected.append((cmd.request_id, exc))
            elif isinstance(cmd, Abort):
                self.engine.abort(cmd.request_id)
            elif isinstance(cmd, Snapshot):
                self.want_snapshot = True
            elif isinstance(cmd, Probe):
                self.probed = True
            elif isinstance(cmd, Stop):
                self.stopped = True
                return rejected
        return rejected

    def _add(self, cmd: AddRequest | AddEmbedding) -> None:
        if isinstance(cmd, AddRequest):
            self.engine.add_request(cmd.request_id, cmd.prompt_token_ids, cmd.params)
        else:
            self.engine.add_embedding(cmd.request_id, cmd.prompts, cmd.params)

    def _step(self) -> EngineStep:
        engine = self.engine
        start_ns, t0 = time.time_ns(), time.perf_counter()
        try:
            outputs = engine.step()
        except Exception as exc:  # an engine bug must not hang every client
            log.exception("engine step failed")
            if engine.config.tensor_parallel_size > 1:
                raise  # the other ranks may sit in a collective of this step: end them all
            engine.abort_all()  # the worker fails every request it holds on `crashed`
            return EngineStep([], engine.stats(), crashed=f"engine failed: {exc}")
        seconds, batch = time.perf_counter() - t0, engine.last_batch
        step = EngineStep(outputs, engine.stats(), batch.prefills, start_ns, seconds,
                          batch_size=len(batch), batch_tokens=sum(batch.num_tokens))
        # an echoed prompt of one token has logprobs `[]`, and still its token's text
        if any(o.logprobs or (o.prompt and o.prompt.logprobs is not None) for o in outputs):
            step.token_text = _token_text(engine, outputs)
            if engine.tokenizer is not None:
                step.special_text = _special_text(engine.tokenizer, step.token_text)
                step.token_bytes = {i: engine.tokenizer.token_bytes(i)
                                    for i, text in step.token_text.items() if "\ufffd" in text}
        return step


def _token_text(engine: LLMEngine, outputs: list) -> dict[int, str]:
    ids: set[int] = set()
    for o in outputs:
        lps = o.logprobs or ()
        if o.prompt is not None and o.prompt.logprobs is not None:
            ids.update(o.prompt.token_ids)  # the echo's per-token text goes with its logprobs
            lps = o.prompt.logprobs
        for lp in lps:
            ids.add(lp.token_id)
            ids.update(t for t, _ in lp.top)
    tok = engine.tokenizer
    if tok is None:
        return {i: f"<{i}>" for i in ids}
    return {i: tok.token_text(i) for i in ids}


def _special_text(tok: Tokenizer, token_text: dict[int, str]) -> dict[int, str]:
    """The text of the special tokens among `token_text` (whose text there is skipped)."""
    return {i: shown for i, text in token_text.items()
            if not text and (shown := tok.token_text(i, False))}
