"""The engine's counters, as `LLMEngine.stats()` reports them after each step."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .grammar import GrammarStats
from .kv_cache import KVCacheManager
from .scheduler import Scheduler


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

    @classmethod
    def of(cls, kv: KVCacheManager, scheduler: Scheduler, grammar: GrammarStats) -> EngineStats:
        """A snapshot: later steps do not change it."""
        k = kv.stats()
        return cls(running=len(scheduler.running), waiting=len(scheduler.waiting),
                   num_blocks=k.num_blocks, free_blocks=k.free_blocks,
                   used_blocks=k.used_blocks, cached_blocks=k.cached_blocks,
                   prefix_hit_tokens=k.prefix_hit_tokens, prompt_tokens=k.prefix_query_tokens,
                   preemptions=scheduler.num_preemptions, grammar=replace(grammar))
