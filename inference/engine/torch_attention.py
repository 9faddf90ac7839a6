"""The reference attention backend: plain PyTorch, any device, used on CPU.

Per step (`begin_step`) it builds, once for all layers: the flat list of every sequence's
blocks, a padded layout for the queries, and the causal mask. Each layer then writes its new
K/V, gathers whole blocks (`index_select`, several times faster on CPU than per-token advanced
indexing) into a padded `[B, kv_heads, max_seq_len, head_dim]` batch and runs one
`scaled_dot_product_attention` call for the whole batch, in float32: PyTorch's CPU kernel is
several times slower in bfloat16 than the casts cost.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .attention import AttentionBackend, AttentionMetadata, Rope


class TorchAttentionBackend(AttentionBackend):
    def __init__(self, block_size: int):
        self.block_size = block_size
        self._blocks: torch.Tensor | None = None  # [B * max_blocks] int64
        self._q_index: torch.Tensor | None = None  # [T] int64 into the padded [B*max_q] rows
        self._mask: torch.Tensor | None = None  # [B, 1, max_q, max_seq_len] bool

    def begin_step(self, meta: AttentionMetadata) -> None:
        device = meta.seq_lens.device
        b, max_q, max_kv = meta.num_seqs, meta.max_query_len, meta.max_seq_len
        self._blocks = meta.block_tables.long().reshape(-1)

        starts = meta.query_start_loc[:-1].long()
        q_lens = meta.query_start_loc[1:].long() - starts
        seq_lens = meta.seq_lens.long()
        if max_q == 1:
            self._q_index = None
        else:
            tok = torch.arange(int(meta.query_start_loc[-1]), device=device)
            owner = torch.repeat_interleave(torch.arange(b, device=device), q_lens)
            self._q_index = owner * max_q + (tok - starts[owner])
        # Query i of sequence b sits at position seq_len - q_len + i and sees keys 0..that.
        q_pos = (seq_lens - q_lens)[:, None] + torch.arange(max_q, device=device)
        k_pos = torch.arange(max_kv, device=device)
        mask = k_pos[None, None, :] <= q_pos[:, :, None]
        mask &= k_pos[None, None, :] < seq_lens[:, None, None]
        # Padded query rows see key 0 only: a row with no key would be NaN.
        mask[:, :, 0] = True
        self._mask = mask[:, None]

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
        assert self._blocks is not None and self._mask is not None, "begin_step not called"
        kv_heads, head_dim = k.shape[1], k.shape[2]
        kv_layer[0].view(-1, kv_heads, head_dim).index_copy_(0, meta.slot_mapping, k)
        kv_layer[1].view(-1, kv_heads, head_dim).index_copy_(0, meta.slot_mapping, v)

        b, max_q, heads, max_kv = meta.num_seqs, meta.max_query_len, q.shape[1], meta.max_seq_len
        keys = self._context(kv_layer[0], b, max_kv)  # [B, kv_heads, L, D]
        values = self._context(kv_layer[1], b, max_kv)
        dtype, q = q.dtype, q.float()
        if self._q_index is None:
            qp = q.view(b, 1, heads, head_dim)
        else:
            qp = q.new_zeros(b * max_q, heads, head_dim).index_copy_(0, self._q_index, q)
            qp = qp.view(b, max_q, heads, head_dim)
        out = F.scaled_dot_product_attention(
            qp.transpose(1, 2),
            keys,
            values,
            attn_mask=self._mask,
            scale=scale,
            enable_gqa=heads != kv_heads,
        ).transpose(1, 2)  # [B, max_q, heads, D]
        out = out.reshape(b * max_q, heads, head_dim).to(dtype)
        return out if self._q_index is None else out[self._q_index]

    def _context(self, pool: torch.Tensor, b: int, max_kv: int) -> torch.Tensor:
        """Every sequence's context from `pool` ([blocks, block_size, kv_heads, D])."""
        ctx = pool.index_select(0, self._blocks).view(b, -1, *pool.shape[2:])[:, :max_kv]
        return ctx.float().transpose(1, 2)
