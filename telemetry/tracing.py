"""OpenTelemetry tracing for one kvmesh service, and the one-line span helpers every service uses.

Contract:
- `setup_tracing(service, instance_id)` configures the SDK once per process: a resource with
  `service.name` (`kvmesh-<service>`, or `OTEL_SERVICE_NAME`), `service.version`,
  `service.instance.id` (plus `OTEL_RESOURCE_ATTRIBUTES`), a `BatchSpanProcessor` and the OTLP/HTTP
  exporter, which reads its endpoint, headers, timeout and compression from the standard
  `OTEL_EXPORTER_OTLP_*` / `OTEL_EXPORTER_OTLP_TRACES_*` variables. Sampling follows
  `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (default: parent-based, always on).
- Tracing is ON only when an OTLP endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT` or
  `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) and neither `OTEL_SDK_DISABLED=true` nor
  `OTEL_TRACES_EXPORTER=none` says otherwise. When it is off, no SDK is installed: the API's
  no-op tracer hands out non-recording spans, so every helper below costs a function call,
  and `span`, `traced` and `current_span` without a context to carry on make no span at all.
- `shutdown_tracing()` flushes what is queued and stops the exporter; call it on exit.
- `span(name, **attrs)` (context manager) and `traced(name)` (decorator for async handlers) are
  the helpers other code uses: one line opens a span that is current inside, records an
  exception (status ERROR) and, for `traced`, marks a returned `ErrorReply` as an error too
  (the call site's `observe` adds what else its result means).
  Attribute keys given as keyword arguments use `__` for dots: `gen_ai__request__model=...`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from kvmesh.wire.message import ErrorReply

VERSION = "0.1.0"
_provider: Any = None  # the SDK TracerProvider, when tracing is on
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def tracing_wanted(env: dict[str, str] | os._Environ[str] | None = None) -> bool:
    """True when the standard variables ask for trace export (see the module contract)."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def setup_tracing(service: str, instance_id: str) -> bool:
    """Install the SDK for `service` if tracing is wanted; returns whether it is on."""
    global _provider
    if _provider is not None:
        return True
    if not tracing_wanted():
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({
        "service.name": os.environ.get("OTEL_SERVICE_NAME") or f"kvmesh-{service}",
        "service.namespace": "kvmesh",
        "service.version": VERSION,
        "service.instance.id": instance_id,
    })
    provider = TracerProvider(resource=resource)  # sampler from OTEL_TRACES_SAMPLER
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _provider = provider
    return True


def shutdown_tracing() -> None:
    """Flush queued spans and stop the exporter (no-op when tracing is off)."""
    global _provider
    if _provider is not None:
        with contextlib.suppress(Exception):
            _provider.force_flush(5000)
            _provider.shutdown()
        _provider = None


def enabled() -> bool:
    return _provider is not None


def recording() -> bool:
    """Whether the current span records: the request being handled is traced."""
    return trace.get_current_span().is_recording()


@functools.cache
def max_links() -> int:
    """Links a span keeps (`OTEL_SPAN_LINK_COUNT_LIMIT`, 128 by default): the SDK validates and
    copies every link it is given, then drops those past this, so a caller with more builds
    only this many."""
    from opentelemetry.sdk.trace import SpanLimits

    limit = SpanLimits().max_links  # None: the variable says unlimited
    return sys.maxsize if limit is None else limit


_tracer: trace.Tracer | None = None


def tracer() -> trace.Tracer:
    """kvmesh's tracer (a proxy until the SDK is installed, so caching it is safe)."""
    global _tracer
    if _tracer is None:
        _tracer = trace.get_tracer("kvmesh", VERSION)
    return _tracer


def _attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k.replace("__", "."): v for k, v in attrs.items() if v is not None}


def start_span(name: str, kind: SpanKind = SpanKind.INTERNAL, **attrs: Any) -> Span:
    """A span the caller ends (`span.end()`), child of the current one; not made current."""
    return tracer().start_span(name, kind=kind, attributes=_attrs(attrs))


@contextlib.contextmanager
def span(name: str, kind: SpanKind = SpanKind.INTERNAL, **attrs: Any) -> Iterator[Span]:
    """`with span("cache.lookup", kvmesh__request_id=rid) as s: ... s.set_attribute(...)`."""
    with current_span(name, kind, attributes=_attrs(attrs)) as s:
        yield s


def set_attributes(**attrs: Any) -> None:
    """Set attributes on the current span (no-op when none records)."""
    s = trace.get_current_span()
    if s.is_recording():
        s.set_attributes(_attrs(attrs))


def mark_error(s: Span, message: str, **attrs: Any) -> None:
    """Status ERROR with `message` on `s`, plus attributes (e.g. the HTTP status)."""
    if s.is_recording():
        s.set_status(Status(StatusCode.ERROR, message))
        s.set_attributes(_attrs(attrs))


def mark_error_reply(s: Span, reply: ErrorReply) -> None:
    """Record a wire `ErrorReply` on `s` as the span's error."""
    mark_error(s, f"{reply.status} {reply.type}: {reply.message}",
               kvmesh__error__status=reply.status, kvmesh__error__code=reply.code,
               error__type=reply.code or reply.type)


def traced(name: str, kind: SpanKind = SpanKind.INTERNAL,
           observe: Callable[[Any, Any, float], None] | None = None) -> Callable[[F], F]:
    """Decorate an async mesh call `(self, msg, ...)`: it runs in span `name`; a returned
    `ErrorReply` (the actor contract's error answer, which any mesh call may return) marks the
    span as failed, and the reply still goes back unchanged. `observe(msg, result, seconds)`,
    if given, runs after each call inside the span: the call site's own attributes (what its
    result means) and metrics go there, so this helper knows no service's messages. With
    tracing off no span is made at all (one would record nothing and carry its parent's
    context, which stays current instead): a no-op span costs ~5 µs, on every hop."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        async def inner(*args: Any, **kwargs: Any) -> Any:
            t0 = time.monotonic()
            with current_span(name, kind) as s:
                result = await fn(*args, **kwargs)
                if isinstance(result, ErrorReply):
                    mark_error_reply(s, result)
                if observe is not None:
                    observe(args[1] if len(args) > 1 else None, result, time.monotonic() - t0)
                return result
        return inner  # type: ignore[return-value]
    return wrap


def current_span(name: str, kind: SpanKind = SpanKind.INTERNAL, context: Context | None = None,
                 **start: Any) -> AbstractContextManager[Span]:
    """A new span `name`, current inside (`start`: `start_as_current_span`'s other arguments),
    under `context` when given. With tracing off and no `context` to carry on, none is made
    (`trace.INVALID_SPAN` stands in): it would record nothing, and the context current now
    stays current; with a `context`, the no-op span is what makes it current downstream."""
    if _provider is None and context is None:
        return contextlib.nullcontext(trace.INVALID_SPAN)
    return tracer().start_as_current_span(name, context=context, kind=kind, **start)


def current_ids() -> tuple[str, str]:
    """(trace id, span id) of the current span as hex, or ("", "") when there is none."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return "", ""
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
