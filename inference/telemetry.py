"""The worker's telemetry: one `inference.generate` span per request, engine-step spans, and
the observations that feed the worker's metrics (inference/metrics.py).

Contract:
- `GenerationTelemetry(model, worker_id, stats)` is made once by the worker; `stats()` returns
  the engine's latest counters (for the gauges). It reads what the engine reports: each
  `EngineStep` carries its wall-clock start, duration and size, and the rows of the sequences
  that computed prompt tokens.
- `@admission` decorates the worker's generate handler: it opens `inference.generate` in the
  caller's trace (the actor attached it) and keeps it current for the handler; a returned
  `ErrorReply` ends it as an error, an `Accepted` leaves it open until the request ends.
- `on_step(step, arrived)` (loop thread, once per delivered engine step; `arrived` is the
  `time.monotonic()` of the step's arrival, as the worker may publish the step's tokens first)
  reads the step's record and outputs: queue time (admission to the first step that scheduled
  the request), time to first token, inter-token latency per choice, finish reasons, usage
  (all timed at `arrived`); it ends a request's span when its usage arrives (its end time is
  `arrived`, so it still ends before the gateway's span, which waits for the published frames),
  or as an error when the step reports it failed.
- A step that starts or ends a traced request (computes part of its prompt, or gives its last
  token) becomes an `engine.step` span, with batch size and prefill/decode token counts: child
  of the first such request's span, linked to each of them (the first `tracing.max_links()`:
  the SDK keeps no more). So a request's trace shows the steps that prefilled it, beside
  what else they ran, and the step that finished it. The decode steps between are counted in
  the metrics (step time, batch size) but not spanned: at 256 traced streams, linking every
  request to every step was 64,000 links a second for the SDK to copy and the exporter to
  encode, on the worker's GIL (docs/BENCHMARKS.md, issue 12, twentieth session).
- `cancelled(rid)` and `abort_all(why)` end spans of requests that will never finish.
- When tracing is off the spans are non-recording and no step span is built; metrics still
  count (a handful of dict and histogram operations per step, nothing per token beyond ITL).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from inference import metrics
from kvmesh.wire import Accepted, ErrorReply
from telemetry import tracing
from telemetry.metrics import observe_many
from telemetry.token_clock import TokenClock

if TYPE_CHECKING:
    from inference.engine_protocol import EngineStep


@dataclass
class RequestTrace:
    span: Any
    admitted: float  # time.monotonic()
    prompt_tokens: int
    generates: bool = True  # False: an embedding request
    max_tokens: int | None = None  # None: as many as the context holds
    n: int = 1
    scheduled_at: float | None = None
    clock: TokenClock = field(init=False)
    finish_reasons: list[str] = field(default_factory=list)
    choice_tokens: list[int] | None = None  # tokens per choice, counted only when n > 1

    def __post_init__(self) -> None:
        self.clock = TokenClock(self.admitted)
        if self.n > 1:
            self.choice_tokens = [0] * self.n


class GenerationTelemetry:
    def __init__(self, model: str, worker_id: str, stats: Callable[[], Any]) -> None:
        self.model = model
        self.worker_id = worker_id
        self.requests: dict[str, RequestTrace] = {}
        self.metrics = metrics.worker()
        with contextlib.suppress(ValueError):  # a 2nd worker in one process: keep the 1st's
            self.metrics.watch_engine(model, stats)
        m = self.metrics  # the per-token children, labelled once
        self._tokens, self._ttft, self._itl = (m.generation_tokens.labels(model),
                                               m.ttft.labels(model), m.itl.labels(model))

    # -- admission (loop thread) -----------------------------------------------------------

    def start(self, req: Any) -> Any:
        return tracing.tracer().start_span("inference.generate", kind=SpanKind.SERVER,
                                           attributes=_request_attrs(req, self))

    def admitted(self, req: Any, span: Any) -> None:
        generates = getattr(req, "inputs", None) is None
        self.requests[req.request_id] = RequestTrace(
            span, time.monotonic(), _prompt_tokens(req), generates,
            getattr(req, "max_tokens", None), getattr(req, "n", 1))

    def refused(self, span: Any, reply: Any) -> None:
        self.metrics.requests.labels(self.model, str(reply.status)).inc()
        tracing.mark_error_reply(span, reply)
        span.end()

    # -- per step (loop thread) ------------------------------------------------------------

    def on_step(self, step: EngineStep, arrived: float) -> None:
        """Hot path: once per delivered step. See the module contract."""
        now = arrived
        spanned = self._queue_times(step, now) if step.batch_size else {}
        m = self.metrics
        failed = [rid for rid, _ in step.rejected]
        if step.crashed is not None:
            failed = list(self.requests)
        for rid in failed:
            rt = self.requests.pop(rid, None)
            if rt is not None:
                status = "500" if step.crashed is not None else "400"
                m.requests.labels(self.model, status).inc()
                if rt.span.is_recording():
                    rt.span.set_status(Status(StatusCode.ERROR, step.crashed or "rejected"))
                rt.span.end()
        tokens, gaps = 0, []
        for o in step.outputs:
            rid, token_ids, finish, usage = o.request_id, o.token_ids, o.finish_reason, o.usage
            rt = self.requests.get(rid)
            if rt is None:
                continue
            if token_ids:
                tokens += len(token_ids)
                gap = rt.clock.tokens(o.index, len(token_ids), now, self._ttft)
                if gap is not None:
                    gaps.append(gap)
                if rt.choice_tokens is not None:
                    rt.choice_tokens[o.index] += len(token_ids)
            if finish:
                rt.finish_reasons.append(finish)
                m.finish.labels(self.model, finish).inc()
            if usage is not None:
                del self.requests[rid]
                if rt.span.is_recording():
                    spanned[rid] = rt.span.get_span_context()
                self._finish(rt, usage, now)
        if tokens:
            self._tokens.inc(tokens)
            observe_many(self._itl, gaps)  # one pass for the step's chunks, not one each
        for out in step.embeddings:  # an embedding request ends with its last vector
            if out.usage is not None and (rt := self.requests.pop(out.request_id, None)):
                self._finish(rt, out.usage, now)
        if spanned and step.batch_size:
            self._step_span(step, list(spanned.values()))

    def _queue_times(self, step: EngineStep, now: float) -> dict[str, Any]:
        """Observe the step's size and each prefilling request's queue time; return the span
        contexts of the traced requests it prefilled, by request id."""
        m = self.metrics
        m.step_time.labels(self.model).observe(step.seconds)
        m.batch_size.labels(self.model).observe(step.batch_size)
        started = now - step.seconds  # close enough for queue time: the step just ended
        traced: dict[str, Any] = {}
        for rid, _ in step.prefills:
            rt = self.requests.get(rid)
            if rt is None:
                continue
            if rt.scheduled_at is None:  # never before admission: `started` is an estimate
                rt.scheduled_at = max(started, rt.admitted)
                m.queue_time.labels(self.model).observe(rt.scheduled_at - rt.admitted)
                # counted once the engine starts it (as vLLM counts): not one the result
                # cache answered first, whose cancel came while it waited
                m.prompt_tokens.labels(self.model).inc(rt.prompt_tokens)
            if rt.span.is_recording():
                traced[rid] = rt.span.get_span_context()
        return traced

    def _step_span(self, step: EngineStep, requests: list[Any]) -> None:
        """The `engine.step` span of a step that started or ended the traced `requests`."""
        # Links past the SDK's limit would be copied, then dropped: build that many only.
        links = [Link(c) for c in requests[:tracing.max_links()]]
        prefill = sum(n for _, n in step.prefills)
        span = tracing.tracer().start_span(
            "engine.step", context=trace.set_span_in_context(trace.NonRecordingSpan(requests[0])),
            links=links, start_time=step.start_ns,
            attributes={"kvmesh.engine.batch_size": step.batch_size,
                        "kvmesh.engine.prefill_tokens": prefill,
                        "kvmesh.engine.decode_tokens": step.batch_tokens - prefill,
                        "kvmesh.engine.prefill_seqs": len(step.prefills),
                        "kvmesh.worker_id": self.worker_id})
        span.end(end_time=step.start_ns + int(step.seconds * 1e9))

    def _finish(self, rt: RequestTrace, usage: Any, now: float) -> None:
        m = self.metrics
        m.requests.labels(self.model, "200").inc()
        m.e2e.labels(self.model).observe(now - rt.admitted)
        self._per_request(rt, usage, now)
        s = rt.span
        if not s.is_recording():
            s.end()
            return
        attrs: dict[str, Any] = {
            "gen_ai.usage.input_tokens": usage.prompt_tokens,
            "gen_ai.usage.output_tokens": usage.completion_tokens,
            "kvmesh.usage.cached_tokens": usage.cached_tokens,
            "gen_ai.response.finish_reasons": rt.finish_reasons,
        }
        if rt.scheduled_at is not None:
            attrs["kvmesh.queue_time_ms"] = (rt.scheduled_at - rt.admitted) * 1e3
        if rt.clock.ttft_ms is not None:
            attrs["kvmesh.ttft_ms"] = rt.clock.ttft_ms
        s.set_attributes(attrs)
        s.end(end_time=_epoch_ns(now))  # when its last step arrived, not when this runs

    def _per_request(self, rt: RequestTrace, usage: Any, now: float) -> None:
        """vLLM's request-level histograms (inference/metrics.py `RequestHistograms`)."""
        h, model = self.metrics.per_request, self.model
        h.prompt_tokens.labels(model).observe(usage.prompt_tokens)
        if not rt.generates:  # an embedding request: no generation to describe
            return
        h.generation_tokens.labels(model).observe(usage.completion_tokens)
        longest = max(rt.choice_tokens) if rt.choice_tokens else usage.completion_tokens
        h.max_generation_tokens.labels(model).observe(longest)
        if rt.max_tokens is not None:  # as vLLM: only a request that set it
            h.max_tokens.labels(model).observe(rt.max_tokens)
        h.n.labels(model).observe(rt.n)
        first, scheduled = rt.clock.first_token_at, rt.scheduled_at
        if first is not None and scheduled is not None:
            h.prefill.labels(model).observe(max(0.0, first - scheduled))
            h.decode.labels(model).observe(now - first)
            h.inference.labels(model).observe(now - scheduled)

    # -- requests that will not finish -----------------------------------------------------

    def cancelled(self, rid: str, superseded: bool = False) -> None:
        """`rid` was cancelled: a 499, unless `superseded` (the result cache answered it; its
        span says so and no request is counted)."""
        rt = self.requests.pop(rid, None)
        if rt is not None:
            if superseded:
                rt.span.set_attribute("kvmesh.superseded", True)
            else:
                self.metrics.requests.labels(self.model, "499").inc()
                if rt.span.is_recording():
                    rt.span.set_attributes({"kvmesh.cancelled": True,
                                            "error.type": "cancelled"})
            rt.span.end()

    def abort_all(self, why: str) -> None:
        for rt in self.requests.values():
            self.metrics.requests.labels(self.model, "503").inc()
            if rt.span.is_recording():
                rt.span.set_status(Status(StatusCode.ERROR, why))
            rt.span.end()
        self.requests.clear()


def _prompt_tokens(req: Any) -> int:
    """A generation's prompt tokens, or every input's of an embedding request."""
    inputs = getattr(req, "inputs", None)
    if inputs is not None:
        return sum(map(len, inputs))
    return len(req.prompt_token_ids or ())


def _operation(request_id: str) -> str:
    if request_id.startswith(("chatcmpl", "resp_")):  # a Response is a chat underneath
        return "chat"
    return "embeddings" if request_id.startswith("embd") else "text_completion"


def _request_attrs(req: Any, gt: GenerationTelemetry) -> dict[str, Any]:
    attrs = {
        "gen_ai.system": "kvmesh",
        "gen_ai.operation.name": _operation(req.request_id),
        "gen_ai.request.model": req.model,
        "gen_ai.response.model": gt.model,
        "gen_ai.response.id": req.request_id,
        # an embedding request has none of the sampling attributes
        "gen_ai.request.temperature": getattr(req, "temperature", None),
        "gen_ai.request.top_p": getattr(req, "top_p", None),
        "gen_ai.request.max_tokens": getattr(req, "max_tokens", None),
        "gen_ai.request.seed": getattr(req, "seed", None),
        "gen_ai.request.choice.count": getattr(req, "n", None),
        "gen_ai.embeddings.dimension.count": getattr(req, "dimensions", None),
        "kvmesh.request_id": req.request_id,
        "kvmesh.worker_id": gt.worker_id,
        "kvmesh.priority": req.priority,
        "kvmesh.tenant": req.tenant or None,
    }
    return {k: v for k, v in attrs.items() if v is not None}


def admission(handler: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate the worker's `_generate(self, msg, raw)`; `self.telemetry` is the
    `GenerationTelemetry`. See the module contract."""

    @functools.wraps(handler)
    async def inner(self: Any, msg: Any, raw: Any) -> Any:
        gt: GenerationTelemetry = self.telemetry
        span = gt.start(msg)
        with trace.use_span(span, end_on_exit=False, record_exception=True,
                            set_status_on_exception=True):
            try:
                result = await handler(self, msg, raw)
            except BaseException:
                span.end()
                raise
        if isinstance(result, ErrorReply):
            gt.refused(span, result)
        elif isinstance(result, Accepted):
            gt.admitted(msg, span)
        else:
            span.end()
        return result

    return inner


def _epoch_ns(monotonic: float) -> int:
    """A `time.monotonic()` reading of the recent past as epoch nanoseconds (span times)."""
    return time.time_ns() - int((time.monotonic() - monotonic) * 1e9)
