"""Time to first token and inter-token latency of one request, measured where its tokens
arrive: on the worker as the engine emits them, on the gateway as chunks come in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TokenClock:
    start: float  # time.monotonic() the request's clock starts at
    first_token_at: float | None = None
    _last: dict[int, float] = field(default_factory=dict)  # per choice index

    def tokens(self, index: int, count: int, now: float, ttft: Any) -> float | None:
        """`count` new tokens of choice `index` at `now`. The request's first tokens observe
        its time to first token into `ttft` (a labelled histogram); returns these tokens'
        inter-token latency (seconds a token since the choice's last chunk), None for a
        choice's first chunk: the caller observes it, alone or with a step's others
        (telemetry.metrics.observe_many). Hot path: a few float ops and one dict lookup."""
        if self.first_token_at is None:
            self.first_token_at = now
            ttft.observe(now - self.start)
        last = self._last.get(index)
        self._last[index] = now
        return None if last is None else (now - last) / count

    @property
    def ttft_ms(self) -> float | None:
        return None if self.first_token_at is None else (self.first_token_at - self.start) * 1e3
