"""`engine.step` spans: a step that starts or ends traced requests is a span linking them (up to
the SDK's link limit: the worker builds no more links than the SDK keeps), whose parent is the
first of them; a step that only decodes them is not spanned."""

from __future__ import annotations

import time
from collections.abc import Sequence
from types import SimpleNamespace

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from inference.engine.engine_stats import EngineStats
from inference.engine.outputs import StepOutput, Usage
from inference.engine_protocol import EngineStep, PrefillRow
from inference.telemetry import GenerationTelemetry
from telemetry import tracing

MODEL = "step-links-test"
IDLE = EngineStats(0, 0, 64, 64, 0, 0, 0, 0, 0)


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()  # local: the process-wide provider stays unset
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    return exporter


def admitted(tel: GenerationTelemetry, rids: list[str]) -> list[int]:
    """Admit `rids`; their span ids."""
    for rid in rids:
        req = SimpleNamespace(request_id=rid, model=MODEL, prompt_token_ids=[1, 2],
                              priority=0, tenant="")
        tel.admitted(req, tel.start(req))
    return [tel.requests[r].span.get_span_context().span_id for r in rids]


def step(tel: GenerationTelemetry, n: int, prefills: Sequence[PrefillRow] = (),
         outputs: Sequence[StepOutput] = ()) -> None:
    """Deliver a step of `n` sequences: `prefills` computed prompt tokens, the rest decoded."""
    tel.on_step(EngineStep(outputs=list(outputs), stats=IDLE, prefills=list(prefills),
                           start_ns=time.time_ns(), seconds=0.001, batch_size=n,
                           batch_tokens=n + sum(t - 1 for _, t in prefills)), time.monotonic())


def step_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == "engine.step"]


def test_a_step_prefilling_more_traced_requests_than_the_limit_links_the_first(
        exporter: InMemorySpanExporter) -> None:
    tel = GenerationTelemetry(MODEL, "w0", lambda: IDLE)
    limit = tracing.max_links()
    rids = [f"r{i}" for i in range(limit + 3)]
    ids = admitted(tel, rids)
    step(tel, len(rids), prefills=[(r, 2) for r in rids])
    [span] = step_spans(exporter)
    assert [link.context.span_id for link in span.links] == ids[:limit]
    assert span.parent is not None and span.parent.span_id == ids[0]
    assert span.attributes is not None
    assert span.attributes["kvmesh.engine.batch_size"] == len(rids)
    assert span.attributes["kvmesh.engine.prefill_seqs"] == len(rids)
    assert span.attributes["kvmesh.engine.prefill_tokens"] == 2 * len(rids)
    assert span.attributes["kvmesh.engine.decode_tokens"] == 0


def test_decode_steps_are_not_spanned_and_the_last_step_links_the_request_it_ends(
        exporter: InMemorySpanExporter) -> None:
    tel = GenerationTelemetry(MODEL, "w0", lambda: IDLE)
    [a, b] = admitted(tel, ["a", "b"])
    step(tel, 2, prefills=[("a", 2), ("b", 2)])
    for _ in range(3):
        step(tel, 2, outputs=[StepOutput("a", 0, [5], "x"),
                              StepOutput("b", 0, [5], "x")])
    assert len(step_spans(exporter)) == 1  # the prefill's
    [c] = admitted(tel, ["c"])
    step(tel, 3, prefills=[("c", 2)],
         outputs=[StepOutput("a", 0, [6], "y", None, "length", Usage(2, 4)),
                  StepOutput("b", 0, [6], "y")])
    last = step_spans(exporter)[-1]
    assert [link.context.span_id for link in last.links] == [c, a]  # started, ended
    assert last.parent is not None and last.parent.span_id == c
    assert last.attributes is not None and last.attributes["kvmesh.engine.decode_tokens"] == 2
    assert b not in {link.context.span_id for link in last.links}
