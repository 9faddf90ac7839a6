"""An `engine.step` span links the traced requests it served, up to the SDK's link limit: the
worker builds no more links than the SDK keeps (the SDK would copy every one, then drop those
past its limit), and the span's parent is the first traced request it served."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from inference.engine.engine_stats import EngineStats
from inference.engine_protocol import EngineStep
from inference.telemetry import GenerationTelemetry
from telemetry import tracing

MODEL = "step-links-test"
IDLE = EngineStats(0, 0, 64, 64, 0, 0, 0, 0, 0)


def test_a_step_of_more_traced_requests_than_the_limit_links_the_first(
        monkeypatch: pytest.MonkeyPatch) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()  # local: the process-wide provider stays unset
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    tel = GenerationTelemetry(MODEL, "w0", lambda: IDLE)
    limit = tracing.max_links()
    rids = [f"r{i}" for i in range(limit + 3)]
    for rid in rids:
        req = SimpleNamespace(request_id=rid, model=MODEL, prompt_token_ids=[1, 2],
                              priority=0, tenant="")
        tel.admitted(req, tel.start(req))
    tel.on_step(EngineStep(outputs=[], stats=IDLE, scheduled=[(r, 1, False) for r in rids],
                           start_ns=time.time_ns(), seconds=0.001, batch_size=len(rids),
                           batch_tokens=len(rids)), time.monotonic())
    [step] = [s for s in exporter.get_finished_spans() if s.name == "engine.step"]
    ids = [tel.requests[r].span.get_span_context().span_id for r in rids]
    assert [link.context.span_id for link in step.links] == ids[:limit]
    assert step.parent is not None and step.parent.span_id == ids[0]
    assert step.attributes["kvmesh.engine.batch_size"] == len(rids)
