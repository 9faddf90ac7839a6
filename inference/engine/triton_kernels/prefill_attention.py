"""Varlen causal attention of a step's new tokens over each sequence's cached prefix.

The new K/V are already in the pool (the backend writes them first), so every key — cached
prefix and new chunk alike — is read through the block table: one code path serves cold
prefills, prefix-cache hits, chunked prefill and decode rows mixed into a prefill step.

Grid `(cdiv(max_query_len, BLOCK_M), num_seqs, heads)`. Sequence b's rows are
`query_start_loc[b]:query_start_loc[b+1]`; its context before the step is
`ctx = seq_lens[b] - q_len`, so row i sits at position `ctx + i` and sees keys `0..ctx + i`.
A program only walks keys up to the last position of its own row tile (causal early exit);
tiles past a sequence's rows do no work. `max_query_len` sizes the grid, so this path is for
eager steps (decode steps use `decode_attention`, which graphs can capture). A float8 pool is
upcast to the query's dtype on load, as in decode.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .paged_tile import LOG2E, attend_tile


# The block table's width changes from step to step: compiled once for any width, not again
# mid-run when a width divisible by 16 (or of 1) first comes along.
@triton.jit(do_not_specialize=["stride_bt"])
def _prefill_kernel(
    Q, KCache, VCache, BlockTables, SeqLens, QueryStart, Out,
    qk_scale,
    stride_qt, stride_qh,
    stride_cb, stride_cs, stride_ch,
    stride_bt,
    stride_ot, stride_oh,
    KV_GROUP: tl.constexpr, PAGE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    b = tl.program_id(1)
    h = tl.program_id(2)
    kvh = h // KV_GROUP
    q_start = tl.load(QueryStart + b)
    q_len = tl.load(QueryStart + b + 1) - q_start
    seq_len = tl.load(SeqLens + b)
    ctx = seq_len - q_len

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_mask = offs_m < q_len
    d_mask = offs_d < HEAD_DIM
    rows = (q_start + offs_m).to(tl.int64)
    q = tl.load(Q + rows[:, None] * stride_qt + h * stride_qh + offs_d[None, :],
                mask=m_mask[:, None] & d_mask[None, :], other=0.0)
    pos_m = ctx + offs_m

    # Keys this tile can see; zero for tiles past the sequence's rows.
    end = tl.minimum(seq_len, ctx + (pid_m + 1) * BLOCK_M)
    end = tl.where(pid_m * BLOCK_M < q_len, end, 0)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    bt_row = BlockTables + b * stride_bt
    # Key 0 is visible to every row, so the running max is finite from the first tile on.
    for n0 in range(0, end, BLOCK_N):
        m_i, l_i, acc = attend_tile(
            q, m_i, l_i, acc, pos_m, KCache, VCache, bt_row, n0, end, kvh, qk_scale,
            stride_cb, stride_cs, stride_ch, offs_d, d_mask,
            PAGE=PAGE, BLOCK_N=BLOCK_N, CAUSAL=True, DOT_PRECISION=DOT_PRECISION,
        )

    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    tl.store(Out + rows[:, None] * stride_ot + h * stride_oh + offs_d[None, :],
             out.to(Out.dtype.element_ty), mask=m_mask[:, None] & d_mask[None, :])


def prefill_attention(
    q: torch.Tensor,  # [T, heads, head_dim]
    kv_layer: torch.Tensor,  # [2, num_blocks, page, kv_heads, head_dim]
    block_tables: torch.Tensor,  # [B, max_blocks] int32
    seq_lens: torch.Tensor,  # [B] int32
    query_start_loc: torch.Tensor,  # [B+1] int32
    max_query_len: int,
    scale: float,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    num_tokens, num_heads, head_dim = q.shape
    _, _, page, kv_heads, _ = kv_layer.shape
    assert q.stride(-1) == 1 and kv_layer.is_contiguous()
    if out is None:
        out = torch.empty_like(q)
    num_seqs = seq_lens.shape[0]
    if num_tokens == 0 or num_seqs == 0:
        return out
    block_d = max(16, triton.next_power_of_2(head_dim))
    block_m = 64 if max_query_len > 32 else 16
    block_n = 64 if block_d <= 64 else 32 if q.dtype == torch.float32 else 64
    k_cache, v_cache = kv_layer[0], kv_layer[1]
    grid = (triton.cdiv(max_query_len, block_m), num_seqs, num_heads)
    _prefill_kernel[grid](
        q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, out,
        scale * LOG2E,
        q.stride(0), q.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        block_tables.stride(0),
        out.stride(0), out.stride(1),
        KV_GROUP=num_heads // kv_heads, PAGE=page,
        BLOCK_M=block_m, BLOCK_N=block_n, HEAD_DIM=head_dim, BLOCK_D=block_d,
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=4, num_stages=2,
    )
    return out
