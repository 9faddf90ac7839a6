"""Telemetry with tracing off (this process installs no SDK): the helpers are no-ops, NATS
headers stay untouched, and logs are still JSON lines with every key. Also: which standard
variables turn tracing on."""

from __future__ import annotations

import io
import json
import logging
import time

from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, use_span

from telemetry import propagation, tracing
from telemetry.logs import JsonFormatter


def test_tracing_wanted_follows_the_standard_variables() -> None:
    assert not tracing.tracing_wanted({})
    assert tracing.tracing_wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://j:4318"})
    assert tracing.tracing_wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://j:4318/v1/t"})
    assert not tracing.tracing_wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://j:4318",
                                       "OTEL_SDK_DISABLED": "true"})
    assert not tracing.tracing_wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://j:4318",
                                       "OTEL_TRACES_EXPORTER": "none"})


def test_untraced_publish_keeps_headers_and_spans_do_not_record() -> None:
    assert not tracing.enabled()
    headers = {"Kvmesh-Request-Id": "r1"}
    assert propagation.inject(headers) is headers
    assert propagation.inject(None) is None
    with tracing.span("cache.lookup", kvmesh__request_id="r1") as s:
        assert not s.is_recording()
        tracing.set_attributes(kvmesh__cache__hit=True)  # no-op, no error
    n = 20_000
    t0 = time.perf_counter()
    for _ in range(n):
        propagation.inject(headers)
        with propagation.attach(headers):
            pass
    per_call_us = (time.perf_counter() - t0) / n * 1e6
    assert per_call_us < 50, f"{per_call_us:.1f} us per untraced publish + handle"


def test_trace_context_crosses_headers_both_ways() -> None:
    ctx = SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, is_remote=True,
                      trace_flags=TraceFlags(1))
    with use_span(NonRecordingSpan(ctx)):
        headers = propagation.inject({"Kvmesh-Request-Id": "chatcmpl-1"})
    assert headers is not None
    assert headers["traceparent"] == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with propagation.attach(headers):
        assert tracing.current_ids() == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
        assert propagation.request_id_var.get() == "chatcmpl-1"
    assert tracing.current_ids() == ("", "")
    assert propagation.request_id_var.get() == ""


def test_log_lines_are_json_with_ids() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter("router"))
    log = logging.getLogger("kvmesh.test_telemetry_off")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    ctx = SpanContext(1, 2, is_remote=True, trace_flags=TraceFlags(1))
    with use_span(NonRecordingSpan(ctx)), propagation.attach({"Kvmesh-Request-Id": "cmpl-9"}):
        log.info("routed %s", "x")
    log.info("idle")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["msg"] == "routed x" and first["service"] == "router"
    assert first["trace_id"] == f"{1:032x}" and first["span_id"] == f"{2:016x}"
    assert first["request_id"] == "cmpl-9" and first["level"] == "INFO"
    assert second["trace_id"] == "" and second["request_id"] == ""


def test_a_traced_call_makes_no_span_but_still_observes(monkeypatch) -> None:
    """With tracing off `@traced` asks for no tracer (a no-op span costs ~5 µs a hop); the
    call's result and its `observe` hook are as with tracing on."""
    import asyncio

    seen: list[tuple[object, object]] = []

    class Service:
        @tracing.traced("svc.call", observe=lambda msg, result, _s: seen.append((msg, result)))
        async def call(self, msg: str) -> str:
            return msg.upper()

    def no_tracer() -> None:
        raise AssertionError("a span was made with tracing off")

    monkeypatch.setattr(tracing, "tracer", no_tracer)
    assert asyncio.run(Service().call("hi")) == "HI"
    assert seen == [("hi", "HI")]


def test_a_current_span_carries_an_incoming_context_and_makes_none_without(monkeypatch) -> None:
    """The gateway's server span with tracing off: an incoming `traceparent` is still made
    current, so it goes on to the next hop; with none, no span is asked for."""
    from opentelemetry.trace import SpanKind, set_span_in_context

    incoming = SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7,
                           is_remote=True, trace_flags=TraceFlags(1))
    with tracing.current_span("POST /v1/completions", SpanKind.SERVER,
                              set_span_in_context(NonRecordingSpan(incoming))) as s:
        assert not s.is_recording()
        headers = propagation.inject({})
    assert headers is not None and headers["traceparent"].startswith(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-")

    def no_tracer() -> None:
        raise AssertionError("a span was made with tracing off and nothing to carry on")

    monkeypatch.setattr(tracing, "tracer", no_tracer)
    with tracing.current_span("POST /v1/completions", SpanKind.SERVER) as s:
        assert propagation.inject({}) == {}
