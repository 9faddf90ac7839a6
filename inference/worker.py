"""The inference worker: a NATS actor in front of an engine process.

Contract:
- Listens on `worker_generate(worker_id)` for `TokenizedRequest`s and `TokenizedEmbed`s
  (answered with one chunk per input carrying its `embedding`). A request it cannot serve
  gets an `ErrorReply` at once (statuses from `inference/error_table.py`: 400 naming the field,
  400 `context_length_exceeded`, 404 another model, 503 draining or full); an admitted one gets
  `Accepted`, and from then on its deltas travel in `Deltas` frames to its `reply_to`: one frame
  per engine step per destination, chunks in `seq` order, the last chunk carrying usage. An
  error after acceptance arrives as a `StreamError` in a frame. With `stream_interval` N above
  1 a request's chunks go every N tokens, coalesced (inference/stream_interval.py).
- A `Cancel` on `CANCEL` aborts the request in the engine (its KV blocks are freed at once);
  a cancel that overtakes its request is remembered for a while and honoured on arrival.
  Requests whose gateway stopped beating (`GatewayBeat`) `gateway_dead_after` seconds ago are
  aborted as if cancelled: a crashed gateway reads nothing, and sends no cancel.
- Publishes a `Heartbeat` every `heartbeat_interval` on `HEARTBEAT`, and one at once when a
  step leaves it holding no request (after that step's frames and KV events): a router counts
  the requests it sent since a worker's last heartbeat as its load, and without it a worker
  that finished them looked busy until the next beat, so a client's next request for the same
  prefix went to another worker. It answers the same on `worker_stats(worker_id)`, and
  publishes `KVEvent`s on `KV_EVENTS` when blocks change (numbered by `seq`); a `KVResync` for
  it (or for all) is answered with one `full` KVEvent holding every cached key, taken after
  the engine's next step's own events.
- The engine runs in its own process behind `EngineClient`: the model never waits for this
  process's network code, and this process never waits for a step.
  Its outputs carry token ids; this process makes their text (inference/output_text.py),
  except for requests with stop strings, whose text the engine makes to find them.
- A step's frames are published before its telemetry runs (spans, metrics): a first token
  does not wait for bookkeeping. The telemetry reads the step's arrival time, so its token
  timings are those of the step, not of the publishing; a step that crashed is recorded at
  once (its failures name the requests held at that moment).
- If the engine process dies, every request in flight ends with a 502 `worker_died` error, the
  worker publishes a draining heartbeat (routers stop sending to it) and exits non-zero, so its
  supervisor (`kvmesh up`, compose, Kubernetes) restarts it.
- Admission is bounded: with `max_num_seqs + max_waiting` requests running or waiting, a new
  one is refused with 503 `overloaded` (retry_after), which the router passes on to the next
  worker, so a flood ends in 503s with Retry-After, not in a queue that outlives its timeouts.
- SIGTERM drains: heartbeats say `draining`, no new requests, in-flight ones finish within the
  grace period (then they end with a 503 error), then the engine process stops and we exit.
- An engine process that holds requests and makes no step for `engine_stall_timeout` seconds
  (paused, stuck) stops the heartbeats and new requests get 503 `engine_stalled`, until it
  steps again (inference/engine_watch.py): the mesh counts the worker dead meanwhile, so its
  clients are failed or re-routed in seconds, not at the gateway's `chunk_timeout`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from inference import error_table, metrics
from inference import telemetry as worker_telemetry
from inference.engine.embedding import PoolingParams
from inference.engine.errors import InvalidParameter, RequestRejected
from inference.engine.outputs import PromptOutput, TokenLogprob, Usage
from inference.engine.prompt_check import check_prompt, check_token_ids
from inference.engine.sampling_params import SamplingParams
from inference.engine_client import EngineClient, EngineStartError
from inference.engine_protocol import EngineReady, EngineStep
from inference.engine_watch import StallWatch
from inference.output_text import ChoiceTexts
from inference.stream_interval import Held
from inference.worker_config import WorkerConfig
from kvmesh import wire
from kvmesh.actor import Actor
from kvmesh.config import load
from kvmesh.cpu_sets import parse_cpus
from kvmesh.wire import (
    Accepted,
    Cancel,
    Chunk,
    Deltas,
    ErrorReply,
    GatewayBeat,
    Heartbeat,
    KVEvent,
    KVResync,
    Logprob,
    Message,
    PromptEcho,
    StreamError,
    TokenizedEmbed,
    TokenizedRequest,
    TopLogprob,
    UsageInfo,
)
from telemetry import propagation, run_service

log = logging.getLogger("kvmesh.worker")
CANCEL_MEMORY_S = 30.0
EMBED_FRAME_BYTES = 256 << 10  # embedding vectors per Deltas frame, well within 1 MiB
# Every sampling field on the wire reaches the engine by name: one the engine lacked would be
# a TypeError on the first request, never a field accepted and dropped.
SAMPLING_NAMES = tuple(f.name for f in dataclasses.fields(wire.SamplingFields))


class EngineDied(RuntimeError):
    """The engine process exited while the worker was serving."""


@dataclass
class _StepTelemetry:
    """A step's telemetry, queued behind the step's frames (see `Worker._publisher`)."""

    step: EngineStep
    arrived: float  # time.monotonic() when the step reached the worker


@dataclass
class Active:
    """Loop-side state of one admitted request."""

    reply_to: str
    want_logprobs: bool
    show_special: bool = False  # `skip_special_tokens: false`: logprob entries show them too
    texts: ChoiceTexts | None = None  # this worker makes the text (inference/output_text.py)
    seq: int = 0  # the next chunk's
    held: Held = field(default_factory=Held)  # stream_interval > 1: chunks not yet sent


class Worker(Actor):
    def __init__(self, cfg: WorkerConfig) -> None:
        worker_id = cfg.worker_id or f"w-{uuid.uuid4().hex[:8]}"
        super().__init__(f"worker-{worker_id}", cfg.nats_url, cfg.grace_period, propagation)
        self.cfg = cfg
        self.worker_id = worker_id
        self.model_name = cfg.served_name or served_name(cfg.model)
        self.revision, self.created = model_revision(cfg.model)
        self.engine: EngineClient | None = None
        self.active: dict[str, Active] = {}
        self.cancelled: dict[str, float] = {}
        self.engine_gone: str | None = None
        self.watch = StallWatch(cfg.engine_stall_timeout)  # a paused or stuck engine process
        self.gateways: dict[str, float] = {}  # a gateway's inbox -> when it last beat
        self._out: asyncio.Queue[tuple[str, Message] | _StepTelemetry] = asyncio.Queue()
        self._kv_seq = 0  # KVEvent.seq of the last event sent
        self.on_drain.append(self._finish_inflight)

    def _engine(self) -> EngineClient:
        assert self.engine is not None, "the engine is not started"
        return self.engine

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.cfg
        self.engine = await EngineClient.start(cfg.model, cfg.engine, cfg.torch_threads,
                                               self._on_step, self._on_engine_exit,
                                               parse_cpus(cfg.engine_cpus), cfg.busy_poll,
                                               cfg.log_level)
        engine = self.engine
        self.revision = answers_revision(self.revision, engine.ready, cfg)
        self.telemetry = worker_telemetry.GenerationTelemetry(  # spans and metrics, from steps
            self.model_name, self.worker_id, lambda: engine.stats)
        await self.connect()
        self._tasks = [asyncio.create_task(self._publisher()),
                       asyncio.create_task(self._heartbeats())]
        await self.serve(wire.worker_generate(self.worker_id),
                         (TokenizedRequest, TokenizedEmbed), self._generate)
        await self.serve(wire.worker_stats(self.worker_id), (wire.Ping,), self._stats,
                         through_drain=True)
        await self.serve(wire.CANCEL, (Cancel,), self._cancel, through_drain=True)
        await self.serve(wire.KV_RESYNC, (KVResync,), self._resync)
        await self.serve(wire.GATEWAY_HEARTBEAT, (GatewayBeat,), self._gateway_beat,
                         through_drain=True, polls=False)
        await self.publish(wire.HEARTBEAT, self.heartbeat())
        ready = engine.ready
        log.info("worker %s serving %s on %s, %s: %s; context %d tokens%s", self.worker_id,
                 self.model_name, ready.device, ready.dtype, ready.dtype_reason,
                 ready.limits.max_model_len,
                 f"; engine process on CPUs {cfg.engine_cpus}" if cfg.engine_cpus else "")

    async def _finish_inflight(self) -> None:
        await self.publish(wire.HEARTBEAT, self.heartbeat())
        deadline = time.monotonic() + self.grace_period
        while self.active and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self._fail_all(error_table.draining("worker shut down before finishing"))
        self.telemetry.abort_all("worker shut down before finishing")
        await self._out.join()
        if self.engine_gone is None:
            self.engine_gone = "stopped"
            await self._engine().stop()

    def _on_engine_exit(self, why: str) -> None:
        """The engine process is gone: fail what we hold, say we are down, and exit."""
        if self.engine_gone is not None:
            return  # we stopped it
        self.engine_gone = why
        log.error("engine process gone: %s; failing %d requests and exiting",
                  why, len(self.active))
        self._fail_all(error_table.engine_gone(why))
        self.telemetry.abort_all(why)
        self.draining = True
        self._out.put_nowait((wire.HEARTBEAT, self.heartbeat()))
        self.stop()

    # -- handlers --------------------------------------------------------------------------

    @worker_telemetry.admission
    async def _generate(self, msg: Message, raw: Any) -> Message:
        assert isinstance(msg, TokenizedRequest | TokenizedEmbed)
        req = msg
        if self.draining:
            return error_table.draining()
        if self.watch.stalled:
            return error_table.engine_stalled(self.watch.timeout)
        if req.model != self.model_name:
            return error_table.other_model(self.model_name, req.model)
        if isinstance(req, TokenizedEmbed):
            return self._embed(req)
        limits = self._engine().ready.limits
        ids = req.prompt_token_ids
        max_tokens = req.max_tokens if req.max_tokens is not None \
            else limits.max_model_len - len(ids)
        try:
            check_prompt(ids, req.max_tokens, limits)
            params = sampling_params(req, max_tokens, share_of(req))
            check_token_ids(params, limits)
        except RequestRejected as exc:
            return error_table.rejected(exc)
        refusal = self._admit(req.request_id, Active(
            req.reply_to, req.logprobs is not None, not req.skip_special_tokens,
            self._texts(params)))
        if refusal is not None:
            return refusal
        self._engine().add(req.request_id, ids, params)
        return Accepted(req.request_id, self.worker_id, len(ids))

    def _texts(self, params: SamplingParams) -> ChoiceTexts | None:
        """The request's text state if this worker makes its text: unless it has stop strings
        (the engine makes that text itself, to stop there) or the model has no tokenizer."""
        ready = self._engine().ready
        if params.stop or ready.tokenizer is None:
            return None
        return ChoiceTexts(ready.tokenizer, params, ready.eos_ids)

    def _embed(self, req: TokenizedEmbed) -> Message:
        """Admit an embedding request (the engine checks `dimensions` against the model)."""
        ready = self._engine().ready
        try:
            if ready.pooling is None:
                raise InvalidParameter("model", f"{self.model_name!r} serves no embeddings "
                                       "(this worker's pooling is none)")
            for ids in req.inputs:
                check_prompt(ids, None, ready.limits)
        except RequestRejected as exc:
            return error_table.rejected(exc)
        refusal = self._admit(req.request_id, Active(req.reply_to, False))
        if refusal is not None:
            return refusal
        self._engine().add_embedding(req.request_id, req.inputs, PoolingParams(
            req.dimensions, req.priority, req.cache_salt, share_of(req)))
        return Accepted(req.request_id, self.worker_id, sum(map(len, req.inputs)))

    def _admit(self, request_id: str, st: Active) -> ErrorReply | None:
        """Take a checked request in as `st`, or say why not (cancelled already, full)."""
        if self.cancelled.pop(request_id, None) is not None:
            return error_table.cancelled()
        capacity = self.cfg.engine.max_num_seqs + self.cfg.max_waiting
        if self.cfg.max_waiting > 0 and len(self.active) >= capacity:  # a queue that never
            return error_table.overloaded(capacity)  # drains times out anyway: refuse it now
        if not self.active:
            self.watch.busy()
        self.active[request_id] = st
        return None

    async def _resync(self, msg: Message, raw: Any) -> None:
        assert isinstance(msg, KVResync)
        if msg.worker_id in ("", self.worker_id):
            self._engine().snapshot()

    async def _stats(self, msg: Message, raw: Any) -> Message:
        return self.heartbeat()

    async def _cancel(self, msg: Message, raw: Any) -> None:
        assert isinstance(msg, Cancel)
        if msg.worker_id not in ("", self.worker_id):
            return  # the request was sent on from that worker, maybe to this one
        rid = msg.request_id
        if self.active.pop(rid, None) is not None:
            self._engine().abort(rid)
            self.telemetry.cancelled(rid, msg.superseded)
            log.info("%s %s", "dropped (the result cache answered it)" if msg.superseded
                     else "cancelled", rid)
            return
        now = time.monotonic()
        self.cancelled[rid] = now
        if len(self.cancelled) > 1024:
            self.cancelled = {k: t for k, t in self.cancelled.items()
                              if now - t < CANCEL_MEMORY_S}

    # -- outputs ---------------------------------------------------------------------------

    def _on_step(self, step: EngineStep) -> None:
        """Hot path, once per engine step: one `Deltas` frame per destination gateway (more
        when embedding vectors would make one too big), then the step's telemetry."""
        arrived = time.monotonic()
        if self.watch.stalled:
            log.warning("engine process steps again")
        self.watch.stepped(arrived)
        frames = _Frames(self.worker_id, self._out)
        held = bool(self.active)
        if step.crashed is not None:
            self.telemetry.on_step(step, arrived)  # at once: it fails the requests held now
            for rid, st in self.active.items():
                frames.get(st.reply_to).errors.append(
                    StreamError(rid, error_table.engine_crashed(step.crashed)))
            self.active.clear()
        for rid, exc in step.rejected:
            st = self.active.pop(rid, None)
            if st is not None:
                frames.get(st.reply_to).errors.append(
                    StreamError(rid, error_table.rejected(exc)))
        active, interval = self.active, self.cfg.stream_interval
        skipped, raw = step.token_text, step.token_bytes  # logprob entries' texts
        shown = {**skipped, **step.special_text} if step.special_text else skipped
        for o in step.outputs:
            rid, token_ids, finish = o.request_id, o.token_ids, o.finish_reason
            st = active.get(rid)
            if st is None:
                continue  # cancelled
            text = o.text if st.texts is None else st.texts.text(o.index, token_ids, finish)
            lps = (_logprobs(o.logprobs, shown if st.show_special else skipped, raw)
                   if st.want_logprobs else None)
            chunk = Chunk(rid, 0, o.index, text, token_ids, lps, finish)
            if o.prompt is not None:
                chunk.prompt = _prompt_echo(o.prompt, shown, raw)
            if interval > 1:
                self._emit_held(frames, st, chunk, o.usage, interval)
            else:
                self._emit(frames, st, chunk, o.usage)
        for out in step.embeddings:
            st = active.get(out.request_id)
            if st is not None:
                self._emit(frames, st, Chunk(out.request_id, 0, out.index, "", [],
                                             embedding=out.embedding), out.usage)
        frames.send()
        if step.crashed is None:  # behind the frames, ahead of the KV events: see _publisher
            self._out.put_nowait(_StepTelemetry(step, arrived))
        self._kv_events(step)
        if held and not self.active:  # idle now: say so (module contract)
            self._out.put_nowait((wire.HEARTBEAT, self.heartbeat()))

    def _emit(self, frames: _Frames, st: Active, chunk: Chunk, usage: Usage | None) -> None:
        """Hot path: `chunk` (numbered here) into its gateway's frame; with `usage`, the
        request's last."""
        chunk.seq = st.seq
        st.seq += 1
        if usage is not None:
            chunk.usage = UsageInfo(usage.prompt_tokens, usage.completion_tokens,
                                    usage.cached_tokens)
            del self.active[chunk.request_id]
        frames.add(st.reply_to, chunk)

    def _emit_held(self, frames: _Frames, st: Active, chunk: Chunk, usage: Usage | None,
                   interval: int) -> None:
        """`stream_interval` above 1: `chunk` is held, or sent with the request's held chunks
        (inference/stream_interval.py)."""
        out = st.held.take(chunk, interval, usage is not None)
        for c in out[:-1]:
            self._emit(frames, st, c, None)
        if out:
            self._emit(frames, st, out[-1], usage)

    def _kv_events(self, step: EngineStep) -> None:
        if step.stored or step.evicted:
            self._kv_seq += 1
            self._out.put_nowait((wire.KV_EVENTS, KVEvent(self.worker_id, step.stored,
                                                          step.evicted, seq=self._kv_seq)))
        if step.snapshot is not None:
            self._kv_seq += 1
            self._out.put_nowait((wire.KV_EVENTS, KVEvent(self.worker_id, step.snapshot, [],
                                                          full=True, seq=self._kv_seq)))

    def _fail_all(self, err: ErrorReply) -> None:
        """End every request in flight with `err` (one frame per destination)."""
        frames: dict[str, Deltas] = {}
        for rid, st in self.active.items():
            if self.engine_gone is None:
                self._engine().abort(rid)
            frames.setdefault(st.reply_to, Deltas(self.worker_id)).errors.append(
                StreamError(rid, err))
        self.active.clear()
        for subject, f in frames.items():
            self._out.put_nowait((subject, f))

    async def _publisher(self) -> None:
        """The one task that publishes outputs, so frames leave in the order they were made.
        A step's telemetry comes right after its frames in the queue (its KV events after it).
        The frames are on the socket when their publishes return, unless the NATS client
        queued them for its flusher task (kvmesh/nats_client.py: a full socket buffer, or
        nats-py's own client); the yield before the telemetry lets that task write them
        before anything else is encoded."""
        while True:
            item = await self._out.get()
            try:
                if isinstance(item, _StepTelemetry):
                    await asyncio.sleep(0)
                    self.telemetry.on_step(item.step, item.arrived)
                else:
                    await self.publish(*item)
            except Exception:
                if isinstance(item, _StepTelemetry):
                    log.exception("a step's telemetry failed")
                else:
                    log.exception("publish to %s failed", item[0])
            finally:
                self._out.task_done()

    async def _gateway_beat(self, msg: Message, raw: Any) -> None:
        assert isinstance(msg, GatewayBeat)
        self.gateways[msg.inbox] = time.monotonic()

    def _drop_orphans(self) -> None:
        """Stop the requests of gateways whose beats stopped `gateway_dead_after` ago (they
        crashed: nobody reads those deltas). A gateway never heard from is left alone: its
        version may not beat."""
        after = self.cfg.gateway_dead_after
        if not after or not self.gateways:
            return
        now = time.monotonic()
        dead = {inbox for inbox, seen in self.gateways.items() if now - seen > after}
        if not dead:
            return
        for inbox in dead:
            del self.gateways[inbox]
        orphans = [rid for rid, st in self.active.items() if st.reply_to in dead]
        for rid in orphans:
            del self.active[rid]
            self._engine().abort(rid)
            self.telemetry.cancelled(rid, False)
        if orphans:
            log.warning("stopped %d requests of %d gateways silent for %gs (nobody reads "
                        "them)", len(orphans), len(dead), after)

    async def _heartbeats(self) -> None:
        while True:
            self._drop_orphans()
            now = time.monotonic()
            if self.watch.wants_probe(bool(self.active), now):  # stalled, or idle a while
                self.watch.probed(now)
                self._engine().probe()  # a step answers once the engine runs
            if not self._stalled():
                try:
                    await self.publish(wire.HEARTBEAT, self.heartbeat())
                except Exception as exc:
                    log.warning("heartbeat failed: %s", exc)
            await asyncio.sleep(self.cfg.heartbeat_interval)

    def _stalled(self) -> bool:
        """The watch's verdict (inference/engine_watch.py), logged when it turns."""
        was = self.watch.stalled
        if self.watch.check(bool(self.active)) and not was:
            log.warning("engine process made no step for %gs (holding %d requests): "
                        "no heartbeats and no new requests until it steps again",
                        self.watch.timeout, len(self.active))
        return self.watch.stalled

    def heartbeat(self) -> Heartbeat:
        engine = self._engine()
        ready, s = engine.ready, engine.stats
        return Heartbeat(
            worker_id=self.worker_id, model=self.model_name, running=s.running,
            waiting=s.waiting, kv_usage=s.used_blocks / max(1, s.num_blocks),
            num_blocks=s.num_blocks, free_blocks=s.free_blocks, used_blocks=s.used_blocks,
            cached_blocks=s.cached_blocks, max_model_len=ready.limits.max_model_len,
            block_size=ready.block_size, draining=self.draining, sent_at=time.time(),
            revision=self.revision, pooling=ready.pooling or "", created=self.created,
        )


class _Frames:
    """One step's `Deltas` frames, one per destination subject. A frame whose embedding bytes
    pass `EMBED_FRAME_BYTES` is queued at once and a fresh one started, so no frame nears the
    NATS max payload however many vectors a step finishes (chunk order is kept)."""

    def __init__(self, worker_id: str, out: asyncio.Queue[tuple[str, Message]]) -> None:
        self.worker_id = worker_id
        self.out = out
        self.frames: dict[str, Deltas] = {}
        self.sizes: dict[str, int] = {}

    def get(self, subject: str) -> Deltas:
        f = self.frames.get(subject)
        if f is None:
            f = self.frames[subject] = Deltas(self.worker_id)
        return f

    def add(self, subject: str, chunk: Chunk) -> None:
        self.get(subject).chunks.append(chunk)
        if chunk.embedding is not None:
            size = self.sizes[subject] = self.sizes.get(subject, 0) + len(chunk.embedding)
            if size > EMBED_FRAME_BYTES:
                self.out.put_nowait((subject, self.frames.pop(subject)))
                self.sizes[subject] = 0

    def send(self) -> None:
        for subject, f in self.frames.items():
            self.out.put_nowait((subject, f))


def _logprobs(lps: Sequence[TokenLogprob] | None, text: dict[int, str],
              raw: dict[int, bytes]) -> list[Logprob] | None:
    """The wire's logprob entries, each token's text from `text` (the step's, with special
    tokens shown or skipped as the answer's text has them: joined, the entries give it)."""
    if lps is None:
        return None
    return [Logprob(lp.token_id, text.get(lp.token_id, ""), lp.logprob,
                    [TopLogprob(t, text.get(t, ""), v, raw.get(t)) for t, v in lp.top],
                    raw.get(lp.token_id)) for lp in lps]


def _prompt_echo(p: PromptOutput, text: dict[int, str], raw: dict[int, bytes]) -> PromptEcho:
    """Each token's text only with logprobs: only echoed logprobs show it. `text` shows
    special tokens: the prompt's text holds them."""
    if p.logprobs is None:
        return PromptEcho(p.text, [])
    return PromptEcho(p.text, [text.get(t, "") for t in p.token_ids],
                      _logprobs(p.logprobs, text, raw), list(p.token_ids))


def sampling_params(req: wire.SamplingFields, max_tokens: int, share: str = "") -> SamplingParams:
    """The engine's SamplingParams from the wire's sampling fields, by name (every one of
    them), in fair-share group `share`; raises `InvalidParameter` naming a field out of
    bounds."""
    fields = {name: getattr(req, name) for name in SAMPLING_NAMES}
    fields["max_tokens"] = max_tokens
    return SamplingParams(**fields, share=share)


def share_of(req: TokenizedRequest | TokenizedEmbed) -> str:
    """A request's fair-share group in the engine: its tenant, so tenants take turns; without
    one (auth off), the request itself, so requests take turns."""
    return f"tenant:{req.tenant}" if req.tenant else f"request:{req.request_id}"


def served_name(spec: str | None) -> str:
    """The name clients use for model `spec`: the default model's name, else the file stem."""
    from inference.engine.model_store import DEFAULT_MODEL_NAME

    if spec is None:
        return DEFAULT_MODEL_NAME
    return Path(spec.removeprefix("dummy:")).name.removesuffix(".gguf")


def model_revision(spec: str | None) -> tuple[str, int]:
    """(identity of the model files behind `spec`: name, size, mtime; their mtime in Unix
    seconds, 0 when unknown). A new file is a new revision, so the result cache never serves
    one model's answer for another's; the mtime is the model's `created` in GET /v1/models."""
    from inference.engine.model_store import resolve_model

    try:
        path = resolve_model(spec)
        st = path.stat()
    except Exception:
        return spec or "", 0
    return f"{path.name}:{st.st_size}:{int(st.st_mtime)}", int(st.st_mtime)


def answers_revision(files: str, ready: EngineReady, cfg: WorkerConfig) -> str:
    """`files` (`model_revision`) and what else decides this worker's answers to a request:
    the dtype the engine chose, its KV cache's, its quantization, the context it serves (an
    absent `max_tokens` runs to it) and, for random weights, their seed. Workers restarted
    with other settings are a new revision, so the result cache never replays the old ones'
    answers."""
    engine = cfg.engine
    parts = [files, ready.dtype, f"kv={engine.kv_cache_dtype}",
             f"quant={engine.quantization or 'none'}", f"ctx={ready.limits.max_model_len}"]
    if engine.load_format == "dummy" or (cfg.model or "").startswith("dummy:"):
        parts.append(f"seed={engine.seed}")
    return ";".join(parts)


async def serve(cfg: WorkerConfig) -> None:
    """Run one worker until SIGTERM/SIGINT; raise `EngineDied` if its engine process dies."""
    worker = Worker(cfg)
    await worker.start()
    await worker.run_until_stopped()
    if worker.engine_gone not in (None, "stopped"):
        raise EngineDied(worker.engine_gone)


def main(argv: Sequence[str] | None = None) -> int:
    """`kvmesh serve worker`: 0 once stopped; 1 when its engine did not start or died, said in
    one ERROR log line (no traceback), so a supervisor restarts it."""
    cfg = load(WorkerConfig, sys.argv[1:] if argv is None else argv)
    # One id for the worker's subjects, its heartbeats and its telemetry instance.
    cfg = replace(cfg, worker_id=cfg.worker_id or f"w-{uuid.uuid4().hex[:8]}")
    metrics.worker(vllm_names=cfg.vllm_metrics)  # before anything observes
    try:
        return run_service("worker", cfg.worker_id, serve(cfg), cfg.log_level, cfg.metrics_port,
                           cfg.metrics_host, cfg.busy_poll)
    except EngineStartError as exc:  # the model or a setting: one log line, not a traceback
        log.error("worker %s: the engine did not start: %s", cfg.worker_id, exc)
        return 1
    except EngineDied as exc:  # one log line, not a traceback; status 1 has it restarted
        log.error("worker %s exits: %s", cfg.worker_id, exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
