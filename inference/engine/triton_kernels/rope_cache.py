"""RoPE and the KV write in one kernel: a step's queries rotated in place, its keys rotated
straight into their pool slots and its values copied beside them, one program per token.

The same function as `rope.apply_rope` followed by `kv_write.reshape_and_cache`, bit for bit
(the same rotation and rounding, the same fp8 saturation), in one launch that reads each key
once. A step runs it once a layer, except a small batch of a model without q/k norm, whose QKV
kernel rotates and writes itself (`qkv_rope_cache.py`): at batch 1 a launch costs more than
the work, so each fusion takes a kernel of each layer away (issue 16). Keys are not rotated in
their own tensor: every attention kernel reads them back from the pool. A negative slot
(CUDA-graph padding) writes nothing to the pool; its query is still rotated.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import pdl
from .pdl import begin
from .rope import rotate, rotated, token_rope


@triton.jit
def _rope_cache_kernel(
    Q, K, V, Cache, Pos, Cos, Sin, Slots,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_cos,
    cache_kv_stride, cache_slot_stride, cache_head_stride,
    Q_HEADS: tl.constexpr, KV_HEADS: tl.constexpr, BLOCK_H: tl.constexpr,
    HALF: tl.constexpr, BLOCK_HALF: tl.constexpr, FP8_MAX: tl.constexpr, PDL: tl.constexpr,
):
    begin(PDL)
    t = tl.program_id(0).to(tl.int64)
    offs_h, offs_d, d_mask, c, s = token_rope(Pos, Cos, Sin, t, stride_cos, Q.dtype.element_ty,
                                              BLOCK_H, HALF, BLOCK_HALF)
    rotate(Q + t * stride_qt + offs_h * stride_qh + offs_d, (offs_h < Q_HEADS) & d_mask,
           c, s, HALF)
    slot = tl.load(Slots + t).to(tl.int64)
    if slot >= 0:
        mask = (offs_h < KV_HEADS) & d_mask
        k1, k2 = rotated(K + t * stride_kt + offs_h * stride_kh + offs_d, mask, c, s, HALF)
        v_ptr = V + t * stride_vt + offs_h * stride_vh + offs_d
        v1 = tl.load(v_ptr, mask=mask)
        v2 = tl.load(v_ptr + HALF, mask=mask)
        dst = Cache + slot * cache_slot_stride + offs_h * cache_head_stride + offs_d
        store_pool(dst, k1, mask, FP8_MAX)
        store_pool(dst + HALF, k2, mask, FP8_MAX)
        store_pool(dst + cache_kv_stride, v1, mask, FP8_MAX)
        store_pool(dst + cache_kv_stride + HALF, v2, mask, FP8_MAX)


@triton.jit
def store_pool(ptr, x, mask, FP8_MAX: tl.constexpr):
    """`x` into the pool's dtype; into float8 saturated first, as kv_write does."""
    if FP8_MAX > 0:
        x = tl.minimum(tl.maximum(x.to(tl.float32), -FP8_MAX), FP8_MAX)
    tl.store(ptr, x.to(ptr.dtype.element_ty), mask=mask)


def rope_and_cache(
    q: torch.Tensor,  # [T, heads, head_dim], rotated in place
    k: torch.Tensor,  # [T, kv_heads, head_dim], read only
    v: torch.Tensor,  # [T, kv_heads, head_dim]
    kv_layer: torch.Tensor,  # [2, num_blocks, block_size, kv_heads, head_dim], contiguous
    slot_mapping: torch.Tensor,  # [T] int64; < 0 = write nothing
    positions: torch.Tensor,  # [T] int
    cos: torch.Tensor,  # [max_position, head_dim // 2] float32
    sin: torch.Tensor,  # [max_position, head_dim // 2] float32
) -> None:
    num_tokens, q_heads, head_dim = q.shape
    kv_heads = k.shape[1]
    if num_tokens == 0:
        return
    assert q.stride(-1) == 1 and k.stride(-1) == 1 and v.stride(-1) == 1
    assert kv_layer.is_contiguous() and cos.stride() == sin.stride()
    half = head_dim // 2
    _rope_cache_kernel[(num_tokens,)](
        q, k, v, kv_layer, positions, cos, sin, slot_mapping,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        cos.stride(0), kv_layer.stride(0), kv_layer.stride(2), kv_layer.stride(3),
        Q_HEADS=q_heads, KV_HEADS=kv_heads, BLOCK_H=triton.next_power_of_2(max(q_heads, kv_heads)),
        HALF=half, BLOCK_HALF=triton.next_power_of_2(half),
        FP8_MAX=448.0 if kv_layer.dtype == torch.float8_e4m3fn else 0.0,
        num_warps=4, **pdl.options(q),
    )
