"""One tile of online-softmax attention over a paged K/V pool, shared by the decode and prefill
kernels (inlined by Triton into each: no call at run time).

`attend_tile` reads keys `n0 .. n0 + BLOCK_N` (those below `end`) of one KV head through the
sequence's block-table row, scores them against the query rows `q` ([M, BLOCK_D]), and folds
them into the running max `m_i`, denominator `l_i` and output `acc` (all float32, log2 base:
`qk_scale` includes log2(e)). With `CAUSAL`, row r only sees keys at positions <= `pos[r]`;
otherwise `pos` is ignored. A float8 pool is upcast to the query's dtype on load (exact); the
dots accumulate in float32.
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = 1.4426950408889634  # scores are taken in base 2: exp2(x * log2(e)) == exp(x)


@triton.jit
def attend_tile(
    q, m_i, l_i, acc, pos,
    KCache, VCache, bt_row, n0, end, kvh, qk_scale,
    stride_cb, stride_cs, stride_ch, offs_d, d_mask,
    PAGE: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    offs_n = n0 + tl.arange(0, BLOCK_N)
    n_mask = offs_n < end
    blk = tl.load(bt_row + offs_n // PAGE, mask=n_mask, other=0).to(tl.int64)
    row = blk * stride_cb + (offs_n % PAGE) * stride_cs + kvh * stride_ch
    kv_mask = n_mask[:, None] & d_mask[None, :]
    k = tl.load(KCache + row[:, None] + offs_d[None, :], mask=kv_mask,
                other=0.0).to(q.dtype)
    v = tl.load(VCache + row[:, None] + offs_d[None, :], mask=kv_mask,
                other=0.0).to(q.dtype)
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
    if CAUSAL:  # noqa: SIM108 (a constexpr branch: Triton drops the other one at compile time)
        visible = n_mask[None, :] & (offs_n[None, :] <= pos[:, None])
    else:
        visible = n_mask[None, :]
    s = tl.where(visible, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    p = tl.math.exp2(s - m_new[:, None])
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
    return m_new, l_i, acc
