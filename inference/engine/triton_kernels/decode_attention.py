"""Paged decode attention: one new query token per sequence, split-K (flash-decoding).

Grid `(num_seqs, kv_heads, num_splits)`. A program owns one KV head of one sequence and one
slice of its context; it computes all `heads / kv_heads` query heads of that KV head at once
(grouped-query aware: each key and value is read from memory once per KV head, and the query
group rides in the M dimension of a tensor-core dot, padded to 16). Each split writes an
un-normalised partial (output, log-sum-exp); a second kernel merges the splits. With one split
the first kernel writes the final output directly.

CUDA-graph safe: the grid depends only on static shapes (`num_seqs`, `kv_heads`) and a
`num_splits` fixed by the caller from an upper bound on the context length
(`decode_splits.decode_num_splits`); each program reads
its real context length from `seq_lens` on the device. A sequence with `seq_len == 0` (graph
padding) gets a zero output.

The pool may be float8 e4m3 (`kv_cache_dtype="fp8"`, scale 1.0): keys and values are upcast to
the query's dtype on load (exact), so an fp8 pool halves the bytes read and nothing else changes.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..decode_splits import decode_block_n
from . import pdl
from .paged_tile import LOG2E, attend_tile
from .pdl import begin


@triton.jit
def _decode_split_kernel(
    Q, KCache, VCache, BlockTables, SeqLens, Out, PartOut, PartLse,
    qk_scale,
    stride_qt, stride_qh,
    stride_cb, stride_cs, stride_ch,
    stride_bt,
    stride_ot, stride_oh,
    stride_pb, stride_ph, stride_ps,
    stride_lb, stride_lh,
    num_splits,
    KV_GROUP: tl.constexpr, BLOCK_H: tl.constexpr, PAGE: tl.constexpr,
    BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    DIRECT: tl.constexpr, DOT_PRECISION: tl.constexpr, PDL: tl.constexpr,
):
    begin(PDL)
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    split = tl.program_id(2)
    seq_len = tl.load(SeqLens + b)
    # Tokens per split, rounded up to whole tiles so splits never share a tile.
    split_len = tl.cdiv(tl.cdiv(seq_len, num_splits), BLOCK_N) * BLOCK_N
    start = split * split_len
    end = tl.minimum(start + split_len, seq_len)

    offs_h = tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_D)
    heads = kvh * KV_GROUP + offs_h
    h_mask = offs_h < KV_GROUP
    d_mask = offs_d < HEAD_DIM
    q = tl.load(
        Q + b * stride_qt + heads[:, None] * stride_qh + offs_d[None, :],
        mask=h_mask[:, None] & d_mask[None, :], other=0.0,
    )

    m_i = tl.full([BLOCK_H], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, BLOCK_D], tl.float32)
    bt_row = BlockTables + b * stride_bt
    for n0 in range(start, end, BLOCK_N):
        m_i, l_i, acc = attend_tile(
            q, m_i, l_i, acc, m_i, KCache, VCache, bt_row, n0, end, kvh, qk_scale,
            stride_cb, stride_cs, stride_ch, offs_d, d_mask,
            PAGE=PAGE, BLOCK_N=BLOCK_N, CAUSAL=False, DOT_PRECISION=DOT_PRECISION,
        )

    has_work = start < end
    safe_l = tl.where(l_i > 0, l_i, 1.0)
    out = acc / safe_l[:, None]
    out_mask = h_mask[:, None] & d_mask[None, :]
    if DIRECT:  # one split: this program's result is final
        tl.store(
            Out + b * stride_ot + heads[:, None] * stride_oh + offs_d[None, :],
            out.to(Out.dtype.element_ty), mask=out_mask,
        )
    else:
        lse = tl.where(has_work, m_i + tl.math.log2(safe_l), float("-inf"))
        tl.store(
            PartOut + b * stride_pb + heads[:, None] * stride_ph + split * stride_ps
            + offs_d[None, :],
            out, mask=out_mask,
        )
        tl.store(PartLse + b * stride_lb + heads * stride_lh + split, lse, mask=h_mask)


@triton.jit
def _decode_merge_kernel(
    PartOut, PartLse, Out,
    stride_pb, stride_ph, stride_ps,
    stride_lb, stride_lh,
    stride_ot, stride_oh,
    num_splits, BLOCK_S: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, PDL: tl.constexpr,
):
    begin(PDL)
    b = tl.program_id(0)
    h = tl.program_id(1)
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    s_mask = offs_s < num_splits
    lse = tl.load(PartLse + b * stride_lb + h * stride_lh + offs_s, mask=s_mask,
                  other=float("-inf"))
    m = tl.max(lse, 0)
    m_safe = tl.where(m == float("-inf"), 0.0, m)
    w = tl.math.exp2(lse - m_safe)  # 0 for empty splits
    parts = tl.load(
        PartOut + b * stride_pb + h * stride_ph + offs_s[:, None] * stride_ps + offs_d[None, :],
        mask=s_mask[:, None] & (offs_d[None, :] < HEAD_DIM), other=0.0,
    )
    parts = tl.where(w[:, None] > 0, parts, 0.0)  # never let an unwritten split leak in
    denom = tl.sum(w, 0)
    out = tl.sum(parts * w[:, None], 0) / tl.where(denom > 0, denom, 1.0)
    tl.store(Out + b * stride_ot + h * stride_oh + offs_d, out.to(Out.dtype.element_ty),
             mask=offs_d < HEAD_DIM)


# (BLOCK_N, num_stages, num_warps) per pool dtype, for a bf16/fp16 query; a dtype not listed
# gets `(decode_block_n(head_dim), 2, 4)`. The upcast between load and dot changes how Triton
# pipelines an fp8 pool's loads, so fp8 has its own tile. bench/decode_tiles.py times
# `TILE_CANDIDATES` at the workload's shapes and says which to keep here.
TILES: dict[torch.dtype, tuple[int, int, int]] = {
    torch.bfloat16: (128, 3, 4),  # H200, cc204d6: 8 % faster than (64, 2, 4) mid-run
    torch.float8_e4m3fn: (128, 4, 4),  # fastest on an H200 at f16a0fd
}
TILE_CANDIDATES = [(n, st, w) for n in (32, 64, 128) for st in (2, 3, 4) for w in (4, 8)]


def decode_tile(head_dim: int, kv_dtype: torch.dtype, q_dtype: torch.dtype
                ) -> tuple[int, int, int]:
    """(BLOCK_N, num_stages, num_warps). A float32 query (tests) keeps the small tile."""
    tile = TILES.get(kv_dtype)
    if tile is not None and q_dtype != torch.float32:
        return tile
    return decode_block_n(head_dim), 2, 4


def decode_workspace(num_seqs: int, num_heads: int, head_dim: int, num_splits: int,
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    part_out = torch.empty(num_seqs, num_heads, num_splits, head_dim, dtype=torch.float32,
                           device=device)
    part_lse = torch.empty(num_seqs, num_heads, num_splits, dtype=torch.float32, device=device)
    return part_out, part_lse


def decode_attention(
    q: torch.Tensor,  # [B, heads, head_dim]
    kv_layer: torch.Tensor,  # [2, num_blocks, page, kv_heads, head_dim]
    block_tables: torch.Tensor,  # [B, max_blocks] int32
    seq_lens: torch.Tensor,  # [B] int32
    scale: float,
    num_splits: int,
    out: torch.Tensor | None = None,
    workspace: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    num_seqs, num_heads, head_dim = q.shape
    _, _, page, kv_heads, _ = kv_layer.shape
    assert q.stride(-1) == 1 and kv_layer.is_contiguous()
    group = num_heads // kv_heads
    if out is None:
        out = torch.empty_like(q)
    if num_seqs == 0:
        return out
    if num_splits > 1 and workspace is None:
        workspace = decode_workspace(num_seqs, num_heads, head_dim, num_splits, q.device)
    part_out, part_lse = workspace if num_splits > 1 else (out, out)
    block_d = max(16, triton.next_power_of_2(head_dim))
    k_cache, v_cache = kv_layer[0], kv_layer[1]
    block_n, stages, warps = decode_tile(head_dim, kv_layer.dtype, q.dtype)
    _decode_split_kernel[(num_seqs, kv_heads, num_splits)](
        q, k_cache, v_cache, block_tables, seq_lens, out, part_out, part_lse,
        scale * LOG2E,
        q.stride(0), q.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        block_tables.stride(0),
        out.stride(0), out.stride(1),
        part_out.stride(0), part_out.stride(1), part_out.stride(2) if num_splits > 1 else 0,
        part_lse.stride(0), part_lse.stride(1),
        num_splits,
        KV_GROUP=group, BLOCK_H=max(16, triton.next_power_of_2(group)), PAGE=page,
        BLOCK_N=block_n, HEAD_DIM=head_dim, BLOCK_D=block_d,
        DIRECT=num_splits == 1,
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=warps, num_stages=stages, **pdl.options(q),
    )
    if num_splits > 1:
        _decode_merge_kernel[(num_seqs, num_heads)](
            part_out, part_lse, out,
            part_out.stride(0), part_out.stride(1), part_out.stride(2),
            part_lse.stride(0), part_lse.stride(1),
            out.stride(0), out.stride(1),
            num_splits, BLOCK_S=max(2, triton.next_power_of_2(num_splits)),
            HEAD_DIM=head_dim, BLOCK_D=block_d, num_warps=1 if head_dim <= 64 else 2,
            **pdl.options(q),
        )
    return out
