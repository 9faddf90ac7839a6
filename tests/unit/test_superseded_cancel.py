"""A request the result cache answered (its gateway routed it alongside the lookup, then
dropped the route: gateway/cache_route.py) is not a client that left: the worker counts no
499 for it, where a real cancel is one (inference/telemetry.py `cancelled`)."""

from __future__ import annotations

from types import SimpleNamespace

from opentelemetry import trace
from prometheus_client import REGISTRY

from inference.engine.engine_stats import EngineStats
from inference.telemetry import GenerationTelemetry
from kvmesh import wire

MODEL = "superseded-test"
IDLE = EngineStats(0, 0, 64, 64, 0, 0, 0, 0, 0)


def _cancels() -> float:
    return REGISTRY.get_sample_value("kvmesh_worker_requests_total",
                                     {"model": MODEL, "status": "499"}) or 0.0


def test_only_a_real_cancel_counts_a_499() -> None:
    tel = GenerationTelemetry(MODEL, "w0", lambda: IDLE)
    for rid in ("dropped", "left"):
        tel.admitted(SimpleNamespace(request_id=rid, prompt_token_ids=[1]), trace.INVALID_SPAN)
    before = _cancels()
    tel.cancelled("dropped", superseded=True)
    assert _cancels() == before and "dropped" not in tel.requests
    tel.cancelled("left")
    assert _cancels() == before + 1


def test_the_flag_crosses_the_wire() -> None:
    got = wire.decode(wire.encode(wire.Cancel("r", superseded=True)))
    assert isinstance(got, wire.Cancel) and got.superseded
    assert not wire.decode(wire.encode(wire.Cancel("r"))).superseded
