"""The engine's counters, as `LLMEngine.stats()` reports them after each step."""

from __future__ import annotations

from dataclasses import dataclass, field

from .grammar import GrammarStats


@dataclass
class EngineStats:
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
