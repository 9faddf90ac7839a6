"""TTFT is observed once per request; ITL is returned per chunk, per choice."""

from __future__ import annotations

from telemetry.token_clock import TokenClock


class Recorder:
    def __init__(self) -> None:
        self.values: list[float] = []

    def observe(self, v: float) -> None:
        self.values.append(v)


def test_first_token_once_and_inter_token_latency_per_choice():
    ttft = Recorder()
    clock = TokenClock(start=10.0)
    assert clock.ttft_ms is None
    assert clock.tokens(0, 1, 10.5, ttft) is None
    assert clock.tokens(1, 1, 10.6, ttft) is None  # choice 1's first: no ITL, no second TTFT
    assert clock.tokens(0, 2, 11.5, ttft) == 0.5  # two tokens in one chunk: 0.5 s each
    assert ttft.values == [0.5]
    assert clock.ttft_ms == 500.0
