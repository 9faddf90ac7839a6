"""The gateway's telemetry: one server span and one metrics record per HTTP request.

Contract:
- `middleware` (put it first, outside the error middleware, so it sees final statuses) opens a
  SERVER span `"<METHOD> <route>"` for every API request, in the trace of an incoming W3C
  `traceparent` header when there is one (with tracing off and no such header it makes none:
  it would record nothing and carry nothing on). It sets `http.request.method`, `http.route`,
  `url.path`, `http.response.status_code`, and for an error response `error.type` (the OpenAI
  error code) with the message; 5xx (and a client that left, 499) set status ERROR, as the
  HTTP semantic conventions ask of server spans. `/metrics`, `/health` and `/ready` get no span.
- The handler calls `identified(request, tenant)` once it knows the caller, so refusals (404,
  429) count under their tenant (`caller` on a route about no model: the admin API); the
  handler calls `served_model(request, model)` once the model is known to be served. Until
  then a generation's `model` label is `unknown`: a label holds only served names, whatever
  a caller sends (each value is a series, kept for the process's life). Handlers annotate
  the request through `record(request)`: `model`, `tenant`, `request_id` (the response
  id), and `on_chunks(chunks)` for every batch of chunks from a worker, which observes time
  to first token, inter-token latency (per choice), finish reasons and token usage.
- The span records the request's `x-request-id` (`kvmesh.x_request_id`, read from
  `propagation.request_id_var`, which gateway/request_id.py sets).
- When the response is done the record feeds the gateway's Prometheus metrics (requests by
  route, status, model, tenant; end-to-end latency) and the span's `gen_ai.*` attributes.
  A stream that ended with an error event (`failed_in_stream`: its HTTP status was 200 when
  the error came) counts under that error's status, so error-ratio alerts see a worker that
  died mid-stream; its span keeps the HTTP status and carries the error.
- A background Response is answered before it is generated: `carry_on(request)` gives its
  work a record of its own, which counts the request (with the status it ended with: 200,
  its error's, 499 cancelled), its latency and its tokens when the work ends; the HTTP
  exchange is not counted apart. Its span was the HTTP request's, ended with the answer;
  the worker's spans still join the request's trace.
- `metrics_handler` answers `GET /metrics` (every family in the process: the gateway's, and the
  result-cache client's from cache/telemetry.py).
- `auth_verified` is the `observe` hook of `@traced("auth.verify")` in gateway/auth_client.py:
  the caller's tenant on the span (never the key).
- The gateway's families are `GatewayMetrics` (`kvmesh_gateway_*`, made once per process by
  `metrics()`); `tenant` labels only the request and token counters.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from aiohttp import web
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import Counter, Gauge, Histogram

from telemetry import propagation, tracing
from telemetry.metrics import E2E_BUCKETS, ITL_BUCKETS, TTFT_BUCKETS, once, render
from telemetry.token_clock import TokenClock

log = logging.getLogger("kvmesh.gateway.access")
UNTRACED = frozenset({"/metrics", "/health", "/ready"})
UNKNOWN_MODEL = "unknown"  # the label of a model not (yet) known to be served


class GatewayMetrics:
    def __init__(self) -> None:
        p = "kvmesh_gateway_"
        self.requests = Counter(p + "requests", "HTTP requests by route, status code, model, "
                                "tenant", ["route", "status", "model", "tenant"])
        self.in_flight = Gauge(p + "requests_in_flight", "HTTP requests being served")
        self.e2e = Histogram(p + "e2e_request_latency_seconds", "Request start to last byte",
                             ["route", "model"], buckets=E2E_BUCKETS)
        self.ttft = Histogram(p + "time_to_first_token_seconds", "Request start to the first "
                              "token at the gateway", ["model"], buckets=TTFT_BUCKETS)
        self.itl = Histogram(p + "inter_token_latency_seconds", "Time between tokens of one "
                             "choice, as the gateway receives them", ["model"],
                             buckets=ITL_BUCKETS)
        self.finish = Counter(p + "finish_reason", "Finished choices by finish reason",
                              ["model", "reason"])
        self.prompt_tokens = Counter(p + "prompt_tokens", "Prompt tokens of served requests",
                                     ["model", "tenant"])
        self.generation_tokens = Counter(p + "generation_tokens", "Generated tokens",
                                         ["model", "tenant"])


def metrics() -> GatewayMetrics:
    """The gateway's families, made on first use."""
    return once("gateway", GatewayMetrics)


class RequestRecord:
    """What the gateway learns about one request while serving it (see the module contract)."""

    def __init__(self, route: str) -> None:
        self.route = route
        self.model = ""
        self.tenant = ""
        self.request_id = ""
        self.start = time.monotonic()
        self.clock = TokenClock(self.start)
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cached_tokens = 0
        self.finish_reasons: list[str] = []
        self.stream_error: tuple[int, str, str] | None = None  # (status, code, message)
        self.deferred = False  # counted by the record it was carried on to (`carried_on`)
        self._ttft: Any = None
        self._itl: Any = None

    def set_request(self, request_id: str, model: str, tenant: str = "") -> None:
        """The response id (`kvmesh.request_id`); the HTTP request's own id, which log lines
        carry, is gateway/request_id.py's."""
        self.request_id, self.model = request_id, model
        self.tenant = tenant or self.tenant
        tracing.set_attributes(kvmesh__request_id=request_id, gen_ai__request__model=model,
                               gen_ai__operation__name=_operation(self.route),
                               kvmesh__tenant=self.tenant or None)

    def on_chunks(self, chunks: list[Any]) -> None:
        """Per batch of chunks from the worker (hot path: a few float ops and dict lookups a
        chunk; the labelled histograms are looked up once per request)."""
        now = time.monotonic()
        if self._ttft is None:
            m = metrics()
            self._ttft, self._itl = m.ttft.labels(self.model), m.itl.labels(self.model)
        for chunk in chunks:
            if chunk.token_ids:
                gap = self.clock.tokens(chunk.index, len(chunk.token_ids), now, self._ttft)
                if gap is not None:
                    self._itl.observe(gap)
            if chunk.finish_reason:
                self.finish_reasons.append(chunk.finish_reason)
                metrics().finish.labels(self.model, chunk.finish_reason).inc()
            if chunk.usage is not None:
                u = chunk.usage
                self.prompt_tokens, self.completion_tokens = u.prompt_tokens, u.completion_tokens
                self.cached_tokens = u.cached_tokens

    def failed_in_stream(self, status: int, code: str, message: str) -> None:
        """The stream (HTTP 200 already sent) ended with this error event."""
        self.stream_error = (status, code, message)

    def carried_on(self) -> RequestRecord:
        """A record for the rest of a request that outlives its HTTP exchange (a background
        Response): the same route, model, tenant, id and clock. The middleware's `finish` of
        this one then only annotates the span; the work reports its chunks to the new one,
        and its `finish_detached(status)` counts the request when it ends, with the status
        it ended with."""
        rec = RequestRecord(self.route)
        rec.model, rec.tenant, rec.request_id = self.model, self.tenant, self.request_id
        rec.start, rec.clock = self.start, self.clock
        self.deferred = True
        return rec

    def _count(self, status: int) -> None:
        """The request, its end-to-end latency and its tokens, in the metrics (once)."""
        m = metrics()
        tenant, model = self.tenant or "none", self.model or "none"
        m.requests.labels(self.route, str(status), model, tenant).inc()
        m.e2e.labels(self.route, model).observe(time.monotonic() - self.start)
        if self.completion_tokens or self.prompt_tokens:
            m.prompt_tokens.labels(model, tenant).inc(self.prompt_tokens)
            m.generation_tokens.labels(model, tenant).inc(self.completion_tokens)

    def finish_detached(self, status: int) -> None:
        """The work carried on past its HTTP exchange ended with `status` (200, the error's,
        499 when cancelled; a stream that ended with an error event, that error's)."""
        if self.stream_error is not None and status < 400:
            status = self.stream_error[0]
        self._count(status)

    def finish(self, span: Any, status: int, error: tuple[str, str] | None) -> None:
        counted = status
        if self.stream_error is not None and status < 400:
            counted, error = self.stream_error[0], self.stream_error[1:]
        if not self.deferred:
            self._count(counted)
        if not span.is_recording():
            return
        span.set_attribute("http.response.status_code", status)
        if xid := propagation.request_id_var.get():
            span.set_attribute("kvmesh.x_request_id", xid)  # the response's x-request-id
        if self.tenant:
            span.set_attribute("kvmesh.tenant", self.tenant)
        if self.clock.ttft_ms is not None:
            span.set_attribute("kvmesh.ttft_ms", self.clock.ttft_ms)
        if self.completion_tokens or self.prompt_tokens:
            span.set_attributes({"gen_ai.usage.input_tokens": self.prompt_tokens,
                                 "gen_ai.usage.output_tokens": self.completion_tokens,
                                 "kvmesh.usage.cached_tokens": self.cached_tokens})
        if self.finish_reasons:
            span.set_attribute("gen_ai.response.finish_reasons", self.finish_reasons)
        if error is not None:
            span.set_attributes({"error.type": error[0], "kvmesh.error.message": error[1]})
        if counted >= 500 or counted == 499:
            span.set_status(Status(StatusCode.ERROR, error[1] if error else str(counted)))


RECORD = web.RequestKey("kvmesh.telemetry", RequestRecord)  # the record in the aiohttp request


def _operation(route: str) -> str:
    if "chat" in route or "responses" in route:  # a Response is a chat underneath
        return "chat"
    return "embeddings" if "embeddings" in route else "text_completion"


def identified(request: web.Request, tenant: str) -> None:
    """The caller is known (`tenant` "" with auth off) and the body read: a request refused
    from here on (404, 429) counts for its tenant, not as `none`, and its model as `unknown`
    until `served_model`."""
    rec = record(request)
    rec.tenant, rec.model = tenant or rec.tenant, rec.model or UNKNOWN_MODEL


def caller(request: web.Request, tenant: str) -> None:
    """The caller of a route about no model (the admin API) is `tenant`."""
    rec = record(request)
    rec.tenant = tenant or rec.tenant


def served_model(request: web.Request, model: str) -> None:
    """`model` is served (checked against the live workers): the label may name it."""
    record(request).model = model


def carry_on(request: web.Request) -> RequestRecord:
    """Give `request` a record of its own for work that goes on past its answer
    (`RequestRecord.carried_on`); `record(request)` returns it from now on."""
    rec = record(request).carried_on()
    request[RECORD] = rec
    return rec


def record(request: web.Request) -> RequestRecord:
    """The request's record (a detached one for a request the middleware did not see)."""
    rec = request.get(RECORD)
    if rec is None:
        rec = RequestRecord(request.path)
        request[RECORD] = rec
    return rec


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _error_of(resp: web.StreamResponse) -> tuple[str, str] | None:
    body = getattr(resp, "body", None)
    if resp.status < 400 or not isinstance(body, bytes | bytearray):
        return None
    try:
        err = json.loads(body)["error"]
        return str(err.get("code") or err.get("type") or resp.status), str(err.get("message"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return str(resp.status), ""


@web.middleware
async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path in UNTRACED:
        return await handler(request)
    route = _route(request)
    rec = RequestRecord(route)
    request[RECORD] = rec
    ctx = propagation.extract(request.headers) if "traceparent" in request.headers else None
    m = metrics()
    m.in_flight.inc()
    status, error = 500, None
    with tracing.current_span(  # none with tracing off and no incoming trace context
            f"{request.method} {route}", SpanKind.SERVER, ctx, record_exception=True,
            set_status_on_exception=True,
            attributes={"http.request.method": request.method, "http.route": route,
                        "url.path": request.path}) as span:
        try:
            resp = await handler(request)
            status, error = resp.status, _error_of(resp)
            return resp
        except web.HTTPException as exc:
            status = exc.status
            raise
        except (asyncio.CancelledError, ConnectionResetError):
            status, error = 499, ("client_closed", "the client closed the connection")
            raise
        finally:
            m.in_flight.dec()
            rec.finish(span, status, error)
            failed = rec.stream_error
            log.info("%s %s %d%s %.1f ms", request.method, request.path, status,
                     f" (stream ended by {failed[0]} {failed[1]})" if failed else "",
                     (time.monotonic() - rec.start) * 1e3)


async def metrics_handler(request: web.Request) -> web.Response:
    body, content_type = render()
    return web.Response(body=body, headers={"Content-Type": content_type})


def auth_verified(key: Any, ident: Any, seconds: float) -> None:
    """After a successful verify: the tenant on the span (never the key)."""
    tracing.set_attributes(kvmesh__tenant=getattr(ident, "tenant", None))


__all__ = ["RECORD", "RequestRecord", "auth_verified", "metrics", "metrics_handler",
           "middleware", "record"]
