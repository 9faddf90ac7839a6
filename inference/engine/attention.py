"""The attention backend interface and the metadata the runner builds for it each step.

KV pool layout (one tensor per engine): `[num_layers, 2, num_blocks, block_size, kv_heads,
head_dim]`; a layer's backend sees `kv[layer]` (`[2, num_blocks, block_size, kv_heads,
head_dim]`). Token slot `s = block_id * block_size + offset`.

A step is a flat batch of T new tokens from B sequences (decodes and prefill chunks mixed).
Sequence b owns query rows `query_start_loc[b]:query_start_loc[b+1]`; after this step it has
`seq_lens[b]` tokens of context, so its i-th new token sits at position
`seq_lens[b] - q_len_b + i` and attends to positions `0..that position` of its own blocks
(`block_tables[b]`). Contract of `forward`: write the new K/V at `slot_mapping`, then return
that causal attention. Backends may precompute per-step state in `begin_step`, which the runner
calls once before the model's forward. A backend whose `fuses_rope` is True also takes `rope`
(positions and the cos/sin tables): q and k come unrotated, and it applies RoPE itself (to q
in place, to the keys as it writes them), one kernel fewer a layer; and it offers `attend`,
the attention alone, for a caller that has already written this step's rotated keys and its
values into the pool (the model's small-batch QKV kernel does, another kernel fewer).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import NamedTuple

import torch


@dataclass
class AttentionMetadata:
    slot_mapping: torch.Tensor  # [T] int64
    query_start_loc: torch.Tensor  # [B+1] int32
    seq_lens: torch.Tensor  # [B] int32, context length after this step
    block_tables: torch.Tensor  # [B, max_blocks] int32; padding entries point at block 0
    max_query_len: int
    max_seq_len: int
    # The first `num_decodes` sequences compute one token each (the scheduler puts decodes
    # first); 0 when not counted. `query_lens`: each sequence's new tokens, on the host;
    # None when not given. cuda_graphs.py plans a step's replays from the two.
    num_decodes: int = 0
    query_lens: list[int] | None = None

    @property
    def num_seqs(self) -> int:
        return self.seq_lens.shape[0]

    @property
    def is_decode(self) -> bool:
        return self.max_query_len == 1


class Rope(NamedTuple):
    """What a backend that fuses RoPE needs: each new token's position and the tables."""

    positions: torch.Tensor  # [T] int
    cos: torch.Tensor  # [max_position, head_dim // 2] float32
    sin: torch.Tensor


class AttentionBackend(ABC):
    """Paged attention for one device kind. Implementations keep the contract above."""

    fuses_rope = False  # True: `forward` takes `rope` and rotates q and k itself

    def begin_step(self, meta: AttentionMetadata) -> None:  # noqa: B027 - optional hook
        """Precompute per-step state shared by every layer."""

    def decode_spans(self, num_seqs: int, kv_heads: int, head_dim: int,
                     max_model_len: int) -> tuple[int, ...]:
        """The longest contexts to capture a decode graph of `num_seqs` rows for, ascending,
        the last `max_model_len`. A decode step's launch may depend on `meta.max_seq_len`
        only through these spans: a graph captured for a span must compute every step whose
        longest context fits it."""
        return (max_model_len,)

    @abstractmethod
    def forward(
        self,
        q: torch.Tensor,  # [T, heads, head_dim]
        k: torch.Tensor,  # [T, kv_heads, head_dim]
        v: torch.Tensor,  # [T, kv_heads, head_dim]
        kv_layer: torch.Tensor,  # [2, num_blocks, block_size, kv_heads, head_dim]
        meta: AttentionMetadata,
        scale: float,
        rope: Rope | None = None,  # only for a backend that `fuses_rope`
    ) -> torch.Tensor:  # [T, heads, head_dim]
        ...

    def attend(
        self, q: torch.Tensor, kv_layer: torch.Tensor, meta: AttentionMetadata, scale: float
    ) -> torch.Tensor:
        """`forward` without the write: q rotated, the step's K/V already at their slots.
        Only a backend that `fuses_rope` has it."""
        raise NotImplementedError(f"{type(self).__name__} writes its own K/V")
