"""One generation stream (one choice of one request) as the scheduler and KV cache see it."""

from __future__ import annotations

import enum
from dataclasses import InitVar, dataclass, field
from typing import Any

import torch

from kvmesh.block_hash import BlockHash

from .sampling_params import SamplingParams


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """Tokens so far and where their KV lives.

    `token_ids` holds prompt then generated tokens. The first `num_computed_tokens` of them
    have K/V in the blocks of `block_table`; the rest are computed by coming steps.
    `prefix_keys[i]` is the chained key of full block i, hashed once in the sequence's life (a
    prefix never changes, so the keys outlive a preemption): admission's prefix lookup and the
    keying of computed blocks both read it (kv_cache.py); the first `num_keyed_blocks` of its
    blocks have been keyed in the pool (hits, or computed and committed).
    `matcher` (an llguidance LLMatcher, see grammar.py) has consumed every generated token of a
    constrained sequence; None when it is unconstrained; `grammar_lane` is the lane it was
    copied from (grammar.py: rows of one lane share a lock). The last token may be a
    placeholder for a token still on its way from the device (inflight.py);
    `last_token_in_flight` says that token is certainly its last (it reaches `stop_len`), so it
    needs no further step. A `pooled` sequence is an embedding input (embedding.py):
    prefilled, pooled, never sampled; `reuse_prefix` False keeps a sequence from taking cached
    prefix blocks (mean pooling and prompt logprobs need every position computed).
    """

    seq_id: int
    request_id: str
    index: int
    token_ids: list[int]
    num_prompt_tokens: int
    params: SamplingParams
    arrival: float
    generator: torch.Generator | None = None
    status: SequenceStatus = SequenceStatus.WAITING
    block_table: list[int] = field(default_factory=list)
    prefix_keys: list[BlockHash] = field(default_factory=list)
    num_keyed_blocks: int = 0
    num_computed_tokens: int = 0
    num_cached_tokens: int = 0  # prompt tokens its first admission found cached
    admitted: bool = False  # admitted once: a re-admission after preemption counts no hits
    matcher: Any = None
    grammar_lane: int = 0
    grammar_error: str = ""  # why its grammar broke ("" while it holds): grammar.py
    last_token_in_flight: bool = False
    pooled: bool = False
    reuse_prefix: bool = True
    table_row: int = -1  # its row in the KV manager's BlockTables (block_tables.py); -1: none
    # The scheduler's order: higher priority first, then its fair-share tag (set by the
    # scheduler when it first queues the sequence, scheduler.py), then created first. Fixed
    # from then on, so computed once (the scheduler sorts by it every step).
    queue_key: tuple[int, int, int] = field(init=False, repr=False)
    # The length at which it ends with "length": its prompt and `max_tokens`, at most
    # `max_len` (its model's context) when given. Fixed for its life, read every step.
    stop_len: int = field(init=False, repr=False)
    max_len: InitVar[int | None] = None

    def __post_init__(self, max_len: int | None) -> None:
        self.queue_key = (-self.params.priority, 0, self.seq_id)
        self.stop_len = self.num_prompt_tokens + self.params.max_tokens
        if max_len is not None:
            self.stop_len = min(self.stop_len, max_len)

    @property
    def priority(self) -> int:
        return self.params.priority

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_new_tokens(self) -> int:
        """Tokens whose K/V is not computed yet (1 for a decoding sequence)."""
        return len(self.token_ids) - self.num_computed_tokens

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def is_prefilling(self) -> bool:
        return self.num_new_tokens > 1

    def reset_for_recompute(self) -> None:
        """After preemption: every token, generated ones too, is recomputed as a prompt."""
        self.num_computed_tokens = 0
        self.block_table = []
        self.num_keyed_blocks = 0
        self.status = SequenceStatus.WAITING
