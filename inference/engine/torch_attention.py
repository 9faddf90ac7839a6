"""The reference attention backend: plain PyTorch, any device, used on CPU.

A step's sequences are attended in groups, each one padded `scaled_dot_product_attention`
call: those computing several tokens (prompt chunks), and those computing one (decodes, and a
prompt's last token alone) by context length (powers of two from 256 tokens). One padded call
for the whole step padded every decode to the longest chunk's query length and the longest
context: on a 2-core CPU, 63 decodes beside one 512-token prompt took 290 ms a layer instead
of 7, and 63 decodes of 300 tokens beside one of 4,000 took 143 ms instead of 3
(`python bench/cpu_attention.py`).

Per step (`begin_step`) it builds, once for all layers and per group: the flat list of its
sequences' blocks, its token rows in the step (none when one group holds the whole step), a
padded layout for a chunk group's queries and its causal mask. Each layer then writes its
new K/V, and per group gathers whole blocks (`index_select`, several times faster on CPU than
per-token advanced indexing) into a padded `[B, kv_heads, max_seq_len, head_dim]` batch and
runs one call, in float32: PyTorch's CPU kernel is several times slower in bfloat16 than the
casts cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .attention import AttentionBackend, AttentionMetadata, Rope


@dataclass
class _Group:
    """Sequences attended in one padded call."""

    rows: torch.Tensor | None  # [t] their token rows of the step; None: every row, in order
    blocks: torch.Tensor  # [n * max_blocks] int64: each sequence's blocks, padded
    q_index: torch.Tensor | None  # [t] int64 into the padded [n * max_q] rows; None: max_q 1
    # [n, 1, max_q, max_kv] bool; None for one sequence whose whole context is this step's,
    # where the kernel's own causal path does it (a 2,048-token prompt: 35 ms a layer, not 59)
    mask: torch.Tensor | None
    n: int
    max_q: int
    max_kv: int


class TorchAttentionBackend(AttentionBackend):
    def __init__(self, block_size: int):
        self.block_size = block_size
        self._groups: list[_Group] = []

    def begin_step(self, meta: AttentionMetadata) -> None:
        starts = meta.query_start_loc[:-1].long()
        q_lens = meta.query_start_loc[1:].long() - starts
        seq_lens = meta.seq_lens.long()
        tables = meta.block_tables.long()
        # Single-token rows by context-length bucket (chunks: bucket -1, one group).
        bucket = torch.where(q_lens == 1, _length_bucket(seq_lens), -1)
        kinds = bucket.unique()
        if kinds.numel() == 1:  # every row in one group, in order: no gather, no scatter
            self._groups = [_group(None, starts, q_lens, seq_lens, tables, self.block_size)]
            return
        self._groups = [_group((bucket == b).nonzero().squeeze(1), starts, q_lens, seq_lens,
                               tables, self.block_size) for b in kinds]

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        kv_layer: torch.Tensor,
        meta: AttentionMetadata,
        scale: float,
        rope: Rope | None = None,  # never given: this backend does not fuse it
    ) -> torch.Tensor:
        assert self._groups, "begin_step not called"
        kv_heads, head_dim = k.shape[1], k.shape[2]
        kv_layer[0].view(-1, kv_heads, head_dim).index_copy_(0, meta.slot_mapping, k)
        kv_layer[1].view(-1, kv_heads, head_dim).index_copy_(0, meta.slot_mapping, v)
        if len(self._groups) == 1 and self._groups[0].rows is None:
            return self._attend(self._groups[0], q, kv_layer, scale)
        out = torch.empty_like(q)
        for g in self._groups:
            assert g.rows is not None
            out.index_copy_(0, g.rows, self._attend(g, q.index_select(0, g.rows), kv_layer,
                                                    scale))
        return out

    def _attend(self, g: _Group, q: torch.Tensor, kv_layer: torch.Tensor,
                scale: float) -> torch.Tensor:
        """Causal attention of group `g`'s query rows `q` ([t, heads, D], in its row order)."""
        heads, head_dim = q.shape[1], q.shape[2]
        keys = self._context(kv_layer[0], g)  # [n, kv_heads, max_kv, D]
        values = self._context(kv_layer[1], g)
        dtype, q = q.dtype, q.float()
        if g.q_index is None:
            qp = q.view(g.n, 1, heads, head_dim)
        else:
            qp = q.new_zeros(g.n * g.max_q, heads, head_dim).index_copy_(0, g.q_index, q)
            qp = qp.view(g.n, g.max_q, heads, head_dim)
        out = F.scaled_dot_product_attention(
            qp.transpose(1, 2),
            keys,
            values,
            attn_mask=g.mask,
            is_causal=g.mask is None,
            scale=scale,
            enable_gqa=heads != keys.shape[1],
        ).transpose(1, 2)  # [n, max_q, heads, D]
        out = out.reshape(g.n * g.max_q, heads, head_dim).to(dtype)
        return out if g.q_index is None else out[g.q_index]

    def _context(self, pool: torch.Tensor, g: _Group) -> torch.Tensor:
        """Group `g`'s sequences' context from `pool` ([blocks, block_size, kv_heads, D])."""
        ctx = pool.index_select(0, g.blocks).view(g.n, -1, *pool.shape[2:])[:, :g.max_kv]
        return ctx.float().transpose(1, 2)


def _length_bucket(seq_lens: torch.Tensor) -> torch.Tensor:
    """Context lengths by power of two from 256 up: single-token rows of one bucket pad to at
    most twice their own context, and a handful of calls cover any mix of lengths."""
    return torch.ceil(torch.log2(seq_lens.float())).clamp(min=8).long()


def _group(idx: torch.Tensor | None, starts: torch.Tensor, q_lens: torch.Tensor,
           seq_lens: torch.Tensor, tables: torch.Tensor, block_size: int) -> _Group:
    """The padded layout of the sequences `idx` (None: all of them, whose rows are the step's
    rows in order)."""
    if idx is not None:
        starts, q_lens, seq_lens, tables = starts[idx], q_lens[idx], seq_lens[idx], tables[idx]
    n, device = seq_lens.shape[0], seq_lens.device
    max_q, max_kv = int(q_lens.max()), int(seq_lens.max())
    blocks = tables[:, : -(-max_kv // block_size)].reshape(-1)
    q_index = None
    if max_q == 1:
        rows = None if idx is None else starts
    else:
        owner = torch.repeat_interleave(torch.arange(n, device=device), q_lens)
        offset = torch.arange(owner.shape[0], device=device) - (q_lens.cumsum(0) - q_lens)[owner]
        q_index = owner * max_q + offset
        rows = None if idx is None else starts[owner] + offset
    if n == 1 and max_q == max_kv:  # queries and keys start at 0 alike: plain causal
        return _Group(rows, blocks, q_index, None, n, max_q, max_kv)
    # Query i of sequence b sits at position seq_len - q_len + i and sees keys 0..that.
    q_pos = (seq_lens - q_lens)[:, None] + torch.arange(max_q, device=device)
    k_pos = torch.arange(max_kv, device=device)
    mask = k_pos[None, None, :] <= q_pos[:, :, None]
    mask &= k_pos[None, None, :] < seq_lens[:, None, None]
    # Padded query rows see key 0 only: a row with no key would be NaN.
    mask[:, :, 0] = True
    return _Group(rows, blocks, q_index, mask[:, None], n, max_q, max_kv)
