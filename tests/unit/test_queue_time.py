"""The worker's queue time (admission to the first step that scheduled a request) reads the
step's start as its arrival less its duration, an estimate that can fall before the request's
admission. The span attribute and the metric then both say 0, never a negative time (a
clean-clone test run once saw `kvmesh.queue_time_ms` at -1.57)."""

from __future__ import annotations

from types import SimpleNamespace

from opentelemetry import trace
from prometheus_client import REGISTRY

from inference.engine.engine_stats import EngineStats
from inference.engine_protocol import EngineStep
from inference.telemetry import GenerationTelemetry

MODEL = "queue-time-test"
IDLE = EngineStats(0, 0, 64, 64, 0, 0, 0, 0, 0)  # what the gauges read at a scrape


def _observed() -> tuple[float, float]:
    labels = {"model": MODEL}
    return (REGISTRY.get_sample_value("kvmesh_worker_queue_time_seconds_sum", labels) or 0.0,
            REGISTRY.get_sample_value("kvmesh_worker_queue_time_seconds_count", labels) or 0.0)


def _scheduled(tel: GenerationTelemetry, rid: str, after_admission: float,
               step_seconds: float) -> float:
    """Admit `rid`, deliver a step of `step_seconds` that scheduled it, arriving
    `after_admission` seconds after its admission; the recorded queue time in seconds."""
    tel.admitted(SimpleNamespace(request_id=rid, prompt_token_ids=[1, 2, 3]), trace.INVALID_SPAN)
    rt = tel.requests[rid]
    tel.on_step(EngineStep(outputs=[], stats=IDLE, prefills=[(rid, 3)],
                           seconds=step_seconds, batch_size=1, batch_tokens=3),
                rt.admitted + after_admission)
    assert rt.scheduled_at is not None
    return rt.scheduled_at - rt.admitted


def test_a_step_estimated_to_start_before_admission_gives_zero_queue_time() -> None:
    tel = GenerationTelemetry(MODEL, "w0", lambda: IDLE)
    sum0, count0 = _observed()
    assert _scheduled(tel, "early", after_admission=0.001, step_seconds=0.003) == 0.0
    sum1, count1 = _observed()
    assert (sum1 - sum0, count1 - count0) == (0.0, 1.0)
    # A step that did start after admission keeps its real wait.
    assert abs(_scheduled(tel, "late", after_admission=0.010, step_seconds=0.004) - 0.006) < 1e-9
    sum2, _ = _observed()
    assert abs(sum2 - sum1 - 0.006) < 1e-9
