"""W3C trace context (`traceparent`, `tracestate`) and the request id across NATS and HTTP.

Contract:
- `inject(headers)` returns `headers` (a new dict if None was given and there is something to
  carry) with the current span's `traceparent`/`tracestate` added; with no recording span
  current it returns `headers` unchanged, so an untraced publish costs one check.
- `attach(headers)` (context manager) makes the caller's trace context, and the request id of
  header `Kvmesh-Request-Id`, current for the block: spans opened inside join the caller's
  trace, and log lines carry its ids. Headers without either change nothing.
- `request_id_var` holds the request id the current task serves ("" for none); logs read it.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

REQUEST_ID_HEADER = "Kvmesh-Request-Id"  # = kvmesh.wire.REQUEST_ID_HEADER
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("kvmesh_request_id",
                                                                     default="")
_W3C = TraceContextTextMapPropagator()


def inject(headers: dict[str, str] | None) -> dict[str, str] | None:
    """Add the current trace context to `headers` (see the module contract)."""
    if not trace.get_current_span().get_span_context().is_valid:
        return headers
    out = dict(headers) if headers else {}
    _W3C.inject(out)
    return out


@contextlib.contextmanager
def attach(headers: Mapping[str, str] | None) -> Iterator[None]:
    """Run the block in the trace context and request id that `headers` carry."""
    if not headers:
        yield
        return
    token = None
    if "traceparent" in headers:
        token = otel_context.attach(_W3C.extract(headers))
    rid = headers.get(REQUEST_ID_HEADER)
    rid_token = request_id_var.set(rid) if rid else None
    try:
        yield
    finally:
        if rid_token is not None:
            request_id_var.reset(rid_token)
        if token is not None:
            otel_context.detach(token)


def extract(headers: Mapping[str, str]) -> otel_context.Context:
    """The context `headers` carry (an empty one if none): for spans started explicitly."""
    return _W3C.extract(headers)
