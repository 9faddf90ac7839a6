"""The inference worker: one `LLMEngine` behind a NATS actor.

Contract:
- Listens on `worker_generate(worker_id)` for `GenerateRequest`s with `prompt_token_ids` set.
  A request that fails validation gets an `ErrorReply` (400 with `param`, 422 for a prompt over
  the context, 404 for another model); an admitted one gets `Accepted` at once, and then its
  `Chunk`s go straight to `reply_to` in order (`seq` 0, 1, 2...), the last carrying usage. An
  error after acceptance arrives on `reply_to` as one `ErrorReply`.
- A `Cancel` on `CANCEL` aborts the request in the engine (its KV blocks are freed at once);
  a cancel that overtakes its request is remembered for a while and honoured on arrival.
- Publishes a `Heartbeat` every `heartbeat_interval` on `HEARTBEAT`, answers the same on
  `worker_stats(worker_id)`, and publishes `KVEvent`s on `KV_EVENTS` when blocks change
  (numbered by `seq`); a `KVResync` for it (or for all) is answered with one `full` KVEvent
  holding every cached key, taken on the engine thread after the step's own events.
- The engine is not thread-safe: one `EngineThread` owns it and runs every step, so the event
  loop never blocks on the model. Commands go in through a queue; outputs come back through
  `loop.call_soon_threadsafe`.
- Admission is bounded: with `max_num_seqs + max_waiting` requests running or waiting, a new
  one is refused with 503 `overloaded` (retry_after), which the router passes on to the next
  worker, so a flood ends in 503s with Retry-After, not in a queue that outlives its timeouts.
- SIGTERM drains: heartbeats say `draining`, no new requests, in-flight ones finish within the
  grace period (then they are aborted with a 503 error), then exit.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kvmesh import wire
from kvmesh.actor import Actor
from kvmesh.config import WorkerConfig, load
from kvmesh.wire import (
    Accepted,
    Cancel,
    Chunk,
    ErrorReply,
    GenerateRequest,
    Heartbeat,
    KVEvent,
    KVResync,
    Logprob,
    Message,
    TopLogprob,
    UsageInfo,
)
from telemetry import generation as gen_telemetry
from telemetry import run_service

log = logging.getLogger("kvmesh.worker")
CANCEL_MEMORY_S = 30.0


@dataclass
class StepResult:
    """What the engine thread hands the loop after one iteration."""

    outputs: list[Any]
    failed: list[tuple[str, ErrorReply]]
    stats: Any
    stored: list[int]
    evicted: list[int]
    snapshot: list[int] | None = None  # every cached key, when a resync asked for it


class EngineThread:
    """Owns the engine; runs `step()` whenever work is pending. Thread-safe `add`/`abort`."""

    def __init__(self, engine: Any, deliver: Callable[[StepResult], None]) -> None:
        self.engine = engine
        self._deliver = deliver
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._stopped = False
        self._want_snapshot = False
        self.stats = engine.stats()
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)

    def start(self) -> None:
        # The loop thread must get the GIL back quickly from the engine thread to publish
        # chunks: the default 5 ms switch interval would add up to 5 ms per token.
        sys.setswitchinterval(0.0005)
        self._thread.start()

    def add(self, request_id: str, prompt_ids: list[int], params: Any) -> None:
        self._inbox.put(("add", (request_id, prompt_ids, params)))

    def abort(self, request_id: str) -> None:
        self._inbox.put(("abort", request_id))

    def snapshot(self) -> None:
        """Deliver every cached block key after this step's events (for a router's resync)."""
        self._inbox.put(("snapshot", None))

    def stop(self) -> None:
        self._stopped = True
        self._inbox.put(("wake", None))
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stopped:
            failed = self._take_commands(block=not self.engine.has_unfinished())
            outputs: list[Any] = []
            if self.engine.has_unfinished():
                try:
                    outputs = self.engine.step()
                except Exception as exc:  # an engine bug must not hang every client
                    log.exception("engine step failed")
                    failed += self._abort_all(exc)
            self.stats = self.engine.stats()
            stored, evicted = self.engine.take_kv_events()
            snapshot = None
            if self._want_snapshot:
                self._want_snapshot = False
                snapshot = list(self.engine.kv.cached_hashes())
            if outputs or failed or stored or evicted or snapshot is not None:
                self._deliver(StepResult(outputs, failed, self.stats, stored, evicted, snapshot))

    def _take_commands(self, block: bool) -> list[tuple[str, ErrorReply]]:
        failed: list[tuple[str, ErrorReply]] = []
        try:
            cmd = self._inbox.get(timeout=0.1) if block else self._inbox.get_nowait()
        except queue.Empty:
            return failed
        while True:
            kind, arg = cmd
            if kind == "add":
                try:
                    self.engine.add_request(*arg)
                except ValueError as exc:
                    failed.append((arg[0], prompt_error(str(exc))))
            elif kind == "abort":
                self.engine.abort(arg)
            elif kind == "snapshot":
                self._want_snapshot = True
            try:
                cmd = self._inbox.get_nowait()
            except queue.Empty:
                return failed

    def _abort_all(self, exc: Exception) -> list[tuple[str, ErrorReply]]:
        """Fail every request: the loop aborts each active id (see `Worker._on_step`)."""
        err = ErrorReply(500, "internal_error", f"engine failed: {exc}", code="engine_error")
        return [("*", err)]


def prompt_error(message: str) -> ErrorReply:
    """422 for a prompt over the context, else 400; `message` is the engine's ValueError."""
    too_long = "long" in message or "context" in message or "max_model_len" in message
    if too_long:
        return ErrorReply(422, "invalid_request_error", message, "messages",
                          "context_length_exceeded")
    return ErrorReply(400, "invalid_request_error", message, "prompt", "invalid_prompt")


@dataclass
class Active:
    """Loop-side state of one admitted request."""

    reply_to: str
    want_logprobs: bool
    seq: int = 0
    headers: dict[str, str] = field(default_factory=dict)


class Worker(Actor):
    def __init__(self, cfg: WorkerConfig, engine: Any) -> None:
        worker_id = cfg.worker_id or f"w-{uuid.uuid4().hex[:8]}"
        super().__init__(f"worker-{worker_id}", cfg.nats_url, cfg.grace_period)
        self.cfg = cfg
        self.worker_id = worker_id
        self.engine = engine
        self.model_name = cfg.served_name or served_name(cfg.model)
        self.revision = model_revision(cfg.model)
        self.tokenizer = engine.tokenizer
        self.active: dict[str, Active] = {}
        self.cancelled: dict[str, float] = {}
        self._out: asyncio.Queue[Message | tuple[str, Message]] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._kv_seq = 0  # KVEvent.seq of the last event sent
        self.thread = EngineThread(engine, self._from_thread)
        self.telemetry = gen_telemetry.GenerationTelemetry(  # spans, metrics; probes the engine
            self.model_name, worker_id, engine, lambda: self.thread.stats)
        self.on_drain.append(self._finish_inflight)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.connect()
        self.thread.start()
        self._tasks = [asyncio.create_task(self._publisher()),
                       asyncio.create_task(self._heartbeats())]
        await self.serve(wire.worker_generate(self.worker_id), (GenerateRequest,), self._generate)
        await self.serve(wire.worker_stats(self.worker_id), (wire.Ping,), self._stats,
                         through_drain=True)
        await self.serve(wire.CANCEL, (Cancel,), self._cancel, through_drain=True)
        await self.serve(wire.KV_RESYNC, (KVResync,), self._resync)
        await self.publish(wire.HEARTBEAT, self.heartbeat())
        log.info("worker %s serving %s", self.worker_id, self.model_name)

    async def _finish_inflight(self) -> None:
        await self.publish(wire.HEARTBEAT, self.heartbeat())
        deadline = time.monotonic() + self.grace_period
        while self.active and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for rid, st in list(self.active.items()):
            self.thread.abort(rid)
            await self.publish(st.reply_to, ErrorReply(
                503, "service_unavailable", "worker shut down before finishing", code="draining"))
        self.active.clear()
        self.telemetry.abort_all("worker shut down before finishing")
        await self._out.join()
        self.thread.stop()

    # -- handlers --------------------------------------------------------------------------

    @gen_telemetry.admission
    async def _generate(self, msg: Message, raw: Any) -> Message:
        req = msg  # type: ignore[assignment]
        assert isinstance(req, GenerateRequest)
        if self.draining:
            return ErrorReply(503, "service_unavailable", "worker is draining", code="draining")
        if req.model != self.model_name:
            return ErrorReply(404, "invalid_request_error",
                              f"worker serves {self.model_name!r}, not {req.model!r}", "model",
                              "model_not_found")
        ids = req.prompt_token_ids
        if not ids:
            return ErrorReply(400, "invalid_request_error", "prompt is empty", "prompt")
        limit = self.engine.max_model_len
        if len(ids) >= limit:
            return ErrorReply(422, "invalid_request_error",
                              f"prompt has {len(ids)} tokens; this model's context is {limit}",
                              "messages", "context_length_exceeded")
        max_tokens = req.max_tokens if req.max_tokens is not None else limit - len(ids)
        if len(ids) + max_tokens > limit:
            return ErrorReply(422, "invalid_request_error",
                              f"prompt ({len(ids)} tokens) plus max_tokens ({max_tokens}) exceeds "
                              f"this model's context of {limit} tokens", "max_tokens",
                              "context_length_exceeded")
        try:
            params = sampling_params(req, max_tokens)
        except ValueError as exc:
            param = str(exc).partition(":")
            return ErrorReply(400, "invalid_request_error", str(exc), param[0].strip() or None)
        if self.cancelled.pop(req.request_id, None) is not None:
            return ErrorReply(499, "cancelled", "request was cancelled", code="cancelled")
        full = self.cfg.max_num_seqs + self.cfg.max_waiting
        if self.cfg.max_waiting > 0 and len(self.active) >= full:  # a queue that never drains
            return ErrorReply(503, "service_unavailable",  # times out anyway: refuse it now
                              f"worker is full ({full} requests running or waiting)",
                              code="overloaded", retry_after=1.0)
        self.active[req.request_id] = Active(req.reply_to, req.logprobs is not None)
        self.thread.add(req.request_id, ids, params)
        return Accepted(req.request_id, self.worker_id, len(ids))

    async def _resync(self, msg: Message, raw: Any) -> None:
        if msg.worker_id in ("", self.worker_id):  # type: ignore[attr-defined]
            self.thread.snapshot()

    async def _stats(self, msg: Message, raw: Any) -> Message:
        return self.heartbeat()

    async def _cancel(self, msg: Message, raw: Any) -> None:
        rid = msg.request_id  # type: ignore[attr-defined]
        if self.active.pop(rid, None) is not None:
            self.thread.abort(rid)
            self.telemetry.cancelled(rid)
            log.info("cancelled %s", rid)
            return
        now = time.monotonic()
        self.cancelled[rid] = now
        if len(self.cancelled) > 1024:
            self.cancelled = {k: t for k, t in self.cancelled.items()
                              if now - t < CANCEL_MEMORY_S}

    # -- outputs ---------------------------------------------------------------------------

    def _from_thread(self, result: StepResult) -> None:
        """Called on the engine thread; hops onto the loop."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._on_step, result)

    def _on_step(self, result: StepResult) -> None:
        """Hot path, once per engine step: outputs become chunks, in order, for the publisher."""
        self.telemetry.on_step(result)
        for rid, err in result.failed:
            if rid == "*":
                for other, st in self.active.items():
                    self.thread.abort(other)
                    self._out.put_nowait((st.reply_to, err))
                self.active.clear()
                continue
            st = self.active.pop(rid, None)
            if st is not None:
                self._out.put_nowait((st.reply_to, err))
        for out in result.outputs:
            st = self.active.get(out.request_id)
            if st is None:
                continue  # cancelled
            chunk = Chunk(out.request_id, st.seq, out.index, out.text, out.token_ids,
                          self._logprobs(out.logprobs) if st.want_logprobs else None,
                          out.finish_reason, None)
            st.seq += 1
            if out.usage is not None:
                u = out.usage
                chunk.usage = UsageInfo(u.prompt_tokens, u.completion_tokens, u.cached_tokens)
                del self.active[out.request_id]
            self._out.put_nowait((st.reply_to, chunk))
        if result.stored or result.evicted:
            self._kv_seq += 1
            self._out.put_nowait((wire.KV_EVENTS, KVEvent(self.worker_id, result.stored,
                                                          result.evicted, seq=self._kv_seq)))
        if result.snapshot is not None:
            self._kv_seq += 1
            self._out.put_nowait((wire.KV_EVENTS, KVEvent(self.worker_id, result.snapshot, [],
                                                          full=True, seq=self._kv_seq)))

    def _logprobs(self, lps: Sequence[Any] | None) -> list[Logprob] | None:
        if lps is None:
            return None
        tok = self.tokenizer.decode
        return [Logprob(lp.token_id, tok([lp.token_id]), lp.logprob,
                        [TopLogprob(t, tok([t]), v) for t, v in lp.top]) for lp in lps]

    async def _publisher(self) -> None:
        """The one task that publishes outputs, so chunks leave in the order they were made."""
        while True:
            subject, msg = await self._out.get()  # type: ignore[misc]
            try:
                await self.publish(subject, msg)
            except Exception:
                log.exception("publish to %s failed", subject)
            finally:
                self._out.task_done()

    async def _heartbeats(self) -> None:
        while True:
            try:
                await self.publish(wire.HEARTBEAT, self.heartbeat())
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)
            await asyncio.sleep(self.cfg.heartbeat_interval)

    def heartbeat(self) -> Heartbeat:
        s = self.thread.stats
        return Heartbeat(
            worker_id=self.worker_id, model=self.model_name, running=s.running,
            waiting=s.waiting, kv_usage=s.used_blocks / max(1, s.num_blocks),
            num_blocks=s.num_blocks, free_blocks=s.free_blocks, used_blocks=s.used_blocks,
            cached_blocks=s.cached_blocks, max_model_len=self.engine.max_model_len,
            block_size=getattr(getattr(self.engine, "config", None), "block_size", 16),
            draining=self.draining, sent_at=time.time(), revision=self.revision,
        )


def served_name(spec: str | None) -> str:
    """The name clients use for model `spec`: the default model's name, else the file stem."""
    from inference.engine.model_store import DEFAULT_MODEL_NAME

    if spec is None:
        return DEFAULT_MODEL_NAME
    return Path(spec.removeprefix("dummy:")).name.removesuffix(".gguf")


def model_revision(spec: str | None) -> str:
    """Identity of the model files behind `spec` (name, size, mtime): a new file is a new
    revision, so the result cache never serves one model's answer for another's."""
    from inference.engine.model_store import resolve_model

    try:
        path = resolve_model(spec)
        st = path.stat()
    except Exception:
        return spec or ""
    return f"{path.name}:{st.st_size}:{int(st.st_mtime)}"


def sampling_params(req: GenerateRequest, max_tokens: int) -> Any:
    """The engine's SamplingParams for `req`; ValueError("field: why") on a bad value."""
    from inference.engine.sampling_params import SamplingParams

    return SamplingParams(
        max_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p, top_k=req.top_k,
        seed=req.seed, n=req.n, stop=list(req.stop), stop_token_ids=list(req.stop_token_ids),
        ignore_eos=req.ignore_eos, logprobs=req.logprobs, priority=req.priority,
        cache_salt=req.cache_salt,
    )


def build_engine(cfg: WorkerConfig) -> Any:
    """Load the model named by `cfg.model` into a fresh engine."""
    import torch

    from inference.engine.config import EngineConfig
    from inference.engine.engine import LLMEngine

    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    kwargs: dict[str, Any] = {
        "max_num_seqs": cfg.max_num_seqs,
        "device": cfg.device,
        "dtype": cfg.dtype,
        "quantization": cfg.quantization,
        "enforce_eager": cfg.enforce_eager,
        "kv_cache_dtype": cfg.kv_cache_dtype,
        "gpu_memory_utilization": cfg.gpu_memory_utilization,
    }
    if cfg.num_kv_blocks is not None:
        kwargs["num_kv_blocks"] = cfg.num_kv_blocks
    if cfg.max_model_len is not None:
        kwargs["max_model_len"] = cfg.max_model_len
    return LLMEngine.from_model(cfg.model, EngineConfig(**kwargs))


async def serve(cfg: WorkerConfig, engine: Any | None = None) -> None:
    """Run one worker until SIGTERM/SIGINT."""
    engine = engine if engine is not None else await asyncio.to_thread(build_engine, cfg)
    worker = Worker(cfg, engine)
    await worker.start()
    await worker.run_until_stopped()


def main(argv: Sequence[str] | None = None) -> int:
    cfg = load(WorkerConfig, sys.argv[1:] if argv is None else argv)
    # One id for the worker's subjects, its heartbeats and its telemetry instance.
    cfg = replace(cfg, worker_id=cfg.worker_id or f"w-{uuid.uuid4().hex[:8]}")
    return run_service("worker", cfg.worker_id, serve(cfg), cfg.log_level, cfg.metrics_port,
                       cfg.metrics_host)


if __name__ == "__main__":
    sys.exit(main())
