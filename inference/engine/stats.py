"""What an engine reports after each step: its load, its KV pool and its counters."""

from __future__ import annotations

from dataclasses import dataclass, field

from .grammar import GrammarStats


@dataclass
class EngineStats:
    """An engine's state after a step: sequences running and waiting, the KV pool's blocks,
    and counters since start (prefix-cache hits, prompt tokens, preemptions, grammar work)."""

    running: int
    waiting: int
    num_blocks: int
    free_blocks: int
    used_blocks: int
    cached_blocks: int
    prefix_hit_tokens: int
    prompt_tokens: int
    preemptions: int
    grammar: GrammarStats = field(default_factory=GrammarStats)  # compiles, hits, tokens

    @property
    def kv_usage(self) -> float:
        return self.used_blocks / self.num_blocks
