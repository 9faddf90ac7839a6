"""Paged attention on CUDA through Triton kernels (`triton_kernels/`).

Keeps the `AttentionBackend` contract (see `attention.py`): write the step's new K/V at
`slot_mapping`, then causal attention of every new token over its sequence's blocks.

- A pure-decode step (`max_query_len == 1`, one row per sequence) runs split-K decode
  attention; its number of splits depends only on the batch size, the head counts and
  `meta.max_seq_len` (`decode_splits.py`), which the CUDA-graph decoder pins to the span of
  the graph it captures (`decode_spans`), so the launch is the same on every replay. No host
  sync, no host value read from a device tensor.
- Any other step (prefill chunks, prefix-cache hits, mixed prefill + decode) runs the varlen
  prefill kernel over the cached prefix.
- Slots < 0 are padding: nothing is written (graph padding rows use them).
- It fuses RoPE (`fuses_rope`): given `rope`, one kernel rotates the queries in place and
  writes the rotated keys and the values into the pool (`triton_kernels/rope_cache.py`).
  `attend` is the attention alone, for the model's small-batch path, whose QKV kernel has
  already rotated the queries and written the pool (`triton_kernels/qkv_rope_cache.py`).
- The pool's dtype is the model's or float8 e4m3 (`kv_cache_dtype="fp8"`): the write kernel
  converts on store, the attention kernels upcast on load; nothing else here depends on it.

Hot path: the split-K workspace is allocated once per step (first layer) and reused by every
layer; `begin_step` drops it so a new step (or a graph capture) allocates its own.
"""

from __future__ import annotations

import torch

from .attention import AttentionBackend, AttentionMetadata, Rope
from .decode_splits import decode_num_splits, decode_spans
from .triton_kernels.decode_attention import decode_attention, decode_workspace
from .triton_kernels.kv_write import reshape_and_cache
from .triton_kernels.prefill_attention import prefill_attention
from .triton_kernels.rope_cache import rope_and_cache


class TritonAttentionBackend(AttentionBackend):
    fuses_rope = True

    def __init__(self, block_size: int = 16, num_sms: int | None = None) -> None:
        self.block_size = block_size  # the pool's shape carries it too; kept for symmetry
        if num_sms is None and torch.cuda.is_available():
            num_sms = torch.cuda.get_device_properties(0).multi_processor_count
        self.num_sms = num_sms or 132
        self._workspace: tuple[torch.Tensor, torch.Tensor] | None = None

    def begin_step(self, meta: AttentionMetadata) -> None:
        self._workspace = None

    def decode_spans(self, num_seqs: int, kv_heads: int, head_dim: int,
                     max_model_len: int) -> tuple[int, ...]:
        return decode_spans(num_seqs, kv_heads, head_dim, max_model_len, self.num_sms)

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        kv_layer: torch.Tensor,
        meta: AttentionMetadata,
        scale: float,
        rope: Rope | None = None,
    ) -> torch.Tensor:
        if rope is None:
            reshape_and_cache(k, v, kv_layer, meta.slot_mapping)
        else:  # one kernel: q rotated in place, keys rotated into the pool
            rope_and_cache(q, k, v, kv_layer, meta.slot_mapping, *rope)
        return self.attend(q, kv_layer, meta, scale)

    def attend(
        self, q: torch.Tensor, kv_layer: torch.Tensor, meta: AttentionMetadata, scale: float
    ) -> torch.Tensor:
        num_tokens, num_heads, head_dim = q.shape
        out = torch.empty((num_tokens, num_heads, head_dim), dtype=q.dtype, device=q.device)
        num_seqs = meta.seq_lens.shape[0]
        if meta.max_query_len == 1 and num_tokens == num_seqs:
            kv_heads = kv_layer.shape[3]
            splits = decode_num_splits(num_seqs, kv_heads, meta.max_seq_len, head_dim,
                                       self.num_sms)
            ws = None
            if splits > 1:
                ws = self._workspace
                if ws is None or ws[1].shape != (num_seqs, num_heads, splits):
                    ws = decode_workspace(num_seqs, num_heads, head_dim, splits, q.device)
                    self._workspace = ws
            return decode_attention(q, kv_layer, meta.block_tables, meta.seq_lens, scale,
                                    splits, out=out, workspace=ws)
        return prefill_attention(q, kv_layer, meta.block_tables, meta.seq_lens,
                                 meta.query_start_loc, meta.max_query_len, scale, out=out)
