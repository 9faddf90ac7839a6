"""TTFT is observed once per request; ITL per token, per choice."""

from __future__ import annotations

from telemetry.token_clock import TokenClock


class Recorder:
    def __init__(self) -> None:
        self.values: list[float] = []

    def observe(self, v: float) -> None:
        self.values.append(v)


def test_first_token_once_and_inter_token_latency_per_choice():
    ttft, itl = Recorder(), Recorder()
    clock = TokenClock(start=10.0)
    assert clock.ttft_ms is None
    clock.tokens(0, 1, 10.5, ttft, itl)
    clock.tokens(1, 1, 10.6, ttft, itl)  # choice 1's first token: no ITL yet, no second TTFT
    clock.tokens(0, 2, 11.5, ttft, itl)  # two tokens in one chunk: 0.5 s each
    assert ttft.values == [0.5]
    assert itl.values == [0.5]
    assert clock.ttft_ms == 500.0
