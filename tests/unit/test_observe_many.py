"""`observe_many` leaves a histogram as observing each value would, for prometheus_client's
children and for a vLLM twin; the worker observes a step's inter-token latencies with it."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from inference.vllm_names import Twin
from telemetry.metrics import ITL_BUCKETS, observe_many


def _exposition(registry: CollectorRegistry) -> list[str]:
    """The scrape text without `_created` lines (each family's creation time differs)."""
    return [line for line in generate_latest(registry).decode().splitlines()
            if "_created" not in line]


def _pair(name: str = "x_seconds") -> tuple[CollectorRegistry, Histogram,
                                            CollectorRegistry, Histogram]:
    one, many = CollectorRegistry(), CollectorRegistry()
    return (one, Histogram(name, "x", ["model"], buckets=ITL_BUCKETS, registry=one),
            many, Histogram(name, "x", ["model"], buckets=ITL_BUCKETS, registry=many))


def test_equals_observing_one_by_one():
    rng = random.Random(3)
    # on every bound, between bounds, past the last, zero
    values = [*ITL_BUCKETS, 0.0, 7.5, *(rng.uniform(0, 0.2) for _ in range(500))]
    one_reg, one, many_reg, many = _pair()
    for v in values:
        one.labels("m").observe(v)
    observe_many(many.labels("m"), values[:100])
    observe_many(many.labels("m"), values[100:])
    observe_many(many.labels("m"), [])
    got, want = _exposition(many_reg), _exposition(one_reg)
    assert [g for g in got if "_sum" not in g] == [w for w in want if "_sum" not in w]
    total = float(next(g for g in got if "_sum" in g).split()[-1])
    assert abs(total - sum(values)) < 1e-9
    at_first_bound = sum(v <= ITL_BUCKETS[0] for v in values)  # a bound counts in its bucket
    assert f'x_seconds_bucket{{le="0.001",model="m"}} {at_first_bound:.1f}' in got


def test_nan_falls_in_no_bucket_as_observe_has_it():
    one_reg, one, many_reg, many = _pair()
    one.labels("m").observe(float("nan"))
    observe_many(many.labels("m"), [float("nan")])
    buckets = [line for line in _exposition(many_reg) if "_bucket" in line]
    assert buckets == [line for line in _exposition(one_reg) if "_bucket" in line]
    assert all(line.endswith(" 0.0") for line in buckets)


def test_a_twin_observes_both_families():
    ours_one, ours_many = CollectorRegistry(), CollectorRegistry()
    make = lambda reg, name: Histogram(name, "x", ["model"], buckets=ITL_BUCKETS,  # noqa: E731
                                       registry=reg)
    single = Twin(make(ours_one, "a_seconds"), make(ours_one, "b_seconds")).labels("m")
    batched = Twin(make(ours_many, "a_seconds"), make(ours_many, "b_seconds")).labels("m")
    values = [0.004, 0.02, 0.3, 0.0009]
    for v in values:
        single.observe(v)
    observe_many(batched, values)
    assert _exposition(ours_many) == _exposition(ours_one)
