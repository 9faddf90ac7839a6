"""A small batch's QKV projection with RoPE and the KV write in its epilogue: one launch where
the decode step ran a skinny projection and then `rope_cache.py`.

The weight streams as in `skinny_linear.py` (same loop, same tiles), but each program owns
`BLOCK_N / 2` rotation pairs of one head rather than `BLOCK_N` adjacent columns: columns
`j` and `j + head_dim / 2` of a head are interleaved in its tile, so after the dot a program
holds both halves of every pair it rotates. The projection's output is rounded to the dtype
before it is rotated, exactly as the separate kernels round it, so the queries and the pool
equal `skinny_linear` + `rope_and_cache`'s up to the dot's last bit (the interleaved columns'
dot may compile to other MMA instructions).

A query head's pairs are rotated into `q`, a key head's rotated into the pool at the row's
slot, a value head's copied beside them; a negative slot (CUDA-graph padding) writes nothing
to the pool. Nothing else of the QKV output is kept: keys and values are read back from the
pool by the attention kernels. Not for Qwen3's per-head q/k norm, which needs a whole head
before RoPE (the model falls back to the separate kernels).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import pdl
from .rope import rotate_pair
from .rope_cache import store_pool
from .skinny_linear import MAX_ROWS, RowNorm, norm_operands, stream, tile_for


@triton.jit
def _qkv_rope_cache_kernel(
    X, W, Bias, Q, Cache, Pos, Cos, Sin, Slots, NormSumsq, NormW,
    M, K, NP, eps, stride_x, stride_w, stride_q, stride_cos,
    cache_kv_stride, cache_slot_stride, cache_head_stride,
    Q_HEADS: tl.constexpr, KV_HEADS: tl.constexpr, HALF: tl.constexpr,
    HAS_BIAS: tl.constexpr, NORM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr, PRO_M: tl.constexpr, BLOCK_P: tl.constexpr, WHOLE: tl.constexpr,
    FP8_MAX: tl.constexpr, PDL: tl.constexpr,
):
    """One program: `BLOCK_N / 2` rotation pairs of one head, for every row."""
    first = tl.program_id(0) * (BLOCK_N // 2)  # this program's first pair, of all heads'
    head = first // HALF
    j = first % HALF + tl.arange(0, BLOCK_N // 2)  # pair index within the head
    i = tl.arange(0, BLOCK_N)
    cols = head * 2 * HALF + first % HALF + i // 2 + (i % 2) * HALF  # lo, hi, lo, hi, ...
    col_ok = cols < (Q_HEADS + 2 * KV_HEADS) * 2 * HALF
    acc = stream(X, W, M, K, stride_x, stride_w, cols, col_ok, False,
                 NORM, NormSumsq, NormW, NP, eps,
                 BLOCK_M, BLOCK_N, BLOCK_K, PRO_M, BLOCK_P, WHOLE, PDL)
    if HAS_BIAS:
        acc += tl.load(Bias + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    lo, hi = tl.split(tl.reshape(acc.to(Q.dtype.element_ty), [BLOCK_M, BLOCK_N // 2, 2]))

    rows = tl.arange(0, BLOCK_M)
    row_ok = rows < M
    if head < Q_HEADS + KV_HEADS:  # a query or key head: rotate
        pos = tl.load(Pos + rows, mask=row_ok, other=0).to(tl.int64)
        table = pos[:, None] * stride_cos + j[None, :]
        dt = Q.dtype.element_ty
        c = tl.load(Cos + table, mask=row_ok[:, None], other=0.0).to(dt).to(tl.float32)
        s = tl.load(Sin + table, mask=row_ok[:, None], other=0.0).to(dt).to(tl.float32)
        lo, hi = rotate_pair(lo, hi, c, s)
    if head < Q_HEADS:
        dst = Q + rows[:, None] * stride_q + head * 2 * HALF + j[None, :]
        tl.store(dst, lo, mask=row_ok[:, None])
        tl.store(dst + HALF, hi, mask=row_ok[:, None])
    else:
        slot = tl.load(Slots + rows, mask=row_ok, other=-1).to(tl.int64)
        kv = head - Q_HEADS
        plane = kv // KV_HEADS  # 0: keys, 1: values
        dst = (Cache + plane * cache_kv_stride + slot[:, None] * cache_slot_stride
               + (kv % KV_HEADS) * cache_head_stride + j[None, :])
        ok = (row_ok & (slot >= 0))[:, None]
        store_pool(dst, lo, ok, FP8_MAX)
        store_pool(dst + HALF, hi, ok, FP8_MAX)


def qkv_rope_cache(
    x: torch.Tensor,  # [M, K], M ≤ MAX_ROWS
    weight: torch.Tensor,  # [(heads + 2 kv_heads) * head_dim, K]: q, k, v rows
    bias: torch.Tensor | None,
    heads: int,
    kv_layer: torch.Tensor,  # [2, num_blocks, block_size, kv_heads, head_dim], contiguous
    slot_mapping: torch.Tensor,  # [M] int64; < 0 = write nothing
    positions: torch.Tensor,  # [M] int
    cos: torch.Tensor,  # [max_position, head_dim // 2] float32
    sin: torch.Tensor,  # [max_position, head_dim // 2] float32
    norm: RowNorm | None = None,  # x is a `Summed.stream` to RMSNorm first (skinny_linear)
) -> torch.Tensor:
    """The rotated queries `[M, heads, head_dim]` (a new tensor); the step's keys and values
    are written to the pool."""
    m, k = x.shape
    kv_heads, head_dim = kv_layer.shape[3], kv_layer.shape[4]
    n = weight.shape[0]
    assert n == (heads + 2 * kv_heads) * head_dim and m <= MAX_ROWS and head_dim % 2 == 0
    assert x.stride(-1) == 1 and weight.stride(-1) == 1 and kv_layer.is_contiguous()
    assert cos.stride() == sin.stride()
    q = torch.empty(m, heads, head_dim, dtype=x.dtype, device=x.device)
    if m == 0:
        return q
    t = tile_for(m, n, k, pdl.enabled(x))
    norm_sumsq, norm_w, parts, eps, block_p = norm_operands(norm, q)
    half = head_dim // 2
    block_n = min(t.block_n, 2 * half)  # a program's pairs never span two heads
    assert half % (block_n // 2) == 0
    _qkv_rope_cache_kernel[(n // block_n,)](
        x, weight, bias if bias is not None else weight, q,
        kv_layer, positions, cos, sin, slot_mapping,
        norm_sumsq, norm_w, m, k, parts, eps,
        x.stride(0), weight.stride(0), q.stride(0), cos.stride(0),
        kv_layer.stride(0), kv_layer.stride(2), kv_layer.stride(3),
        Q_HEADS=heads, KV_HEADS=kv_heads, HALF=half,
        HAS_BIAS=bias is not None, NORM=norm is not None, BLOCK_M=t.block_m, BLOCK_N=block_n,
        BLOCK_K=t.block_k, PRO_M=1 if m == 1 and norm is not None else t.block_m,
        BLOCK_P=block_p, WHOLE=k <= t.block_k,
        FP8_MAX=448.0 if kv_layer.dtype == torch.float8_e4m3fn else 0.0,
        num_warps=t.warps, num_stages=t.stages, **pdl.options(x),
    )
    return q
