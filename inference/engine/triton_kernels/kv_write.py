"""Write the new keys and values of a step into the paged KV pool (reshape-and-cache).

Pool layout per layer: `kv_layer[2, num_blocks, block_size, kv_heads, head_dim]`, token slot
`s = block_id * block_size + offset`. One program per new token copies its `kv_heads * head_dim`
keys and values to slot `slot_mapping[t]`. A negative slot means "padding, write nothing": the
CUDA-graph decoder pads batches with slot -1. No host sync; safe to capture in a CUDA graph.

An fp8 pool (`torch.float8_e4m3fn`) stores each value converted with a per-tensor scale of 1.0,
saturated to +-448 first (e4m3fn has no infinity: an out-of-range value would become NaN).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _reshape_and_cache_kernel(
    K, V, Cache, Slots,
    stride_kt, stride_kh, stride_vt, stride_vh,
    cache_kv_stride, cache_slot_stride, cache_head_stride,
    KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr, FP8_MAX: tl.constexpr,
):
    t = tl.program_id(0)
    slot = tl.load(Slots + t).to(tl.int64)
    if slot >= 0:
        h = tl.arange(0, BLOCK_H)[:, None]
        d = tl.arange(0, BLOCK_D)[None, :]
        mask = (h < KV_HEADS) & (d < HEAD_DIM)
        k = tl.load(K + t * stride_kt + h * stride_kh + d, mask=mask)
        v = tl.load(V + t * stride_vt + h * stride_vh + d, mask=mask)
        if FP8_MAX > 0:  # saturate, then round to the pool's float8
            k = tl.minimum(tl.maximum(k.to(tl.float32), -FP8_MAX), FP8_MAX)
            v = tl.minimum(tl.maximum(v.to(tl.float32), -FP8_MAX), FP8_MAX)
        dst = Cache + slot * cache_slot_stride + h * cache_head_stride + d
        tl.store(dst, k.to(Cache.dtype.element_ty), mask=mask)
        tl.store(dst + cache_kv_stride, v.to(Cache.dtype.element_ty), mask=mask)


def reshape_and_cache(
    k: torch.Tensor,  # [T, kv_heads, head_dim], last dim contiguous
    v: torch.Tensor,  # [T, kv_heads, head_dim], last dim contiguous
    kv_layer: torch.Tensor,  # [2, num_blocks, block_size, kv_heads, head_dim], contiguous
    slot_mapping: torch.Tensor,  # [T] int64; < 0 = skip
) -> None:
    num_tokens, kv_heads, head_dim = k.shape
    if num_tokens == 0:
        return
    assert k.stride(-1) == 1 and v.stride(-1) == 1 and kv_layer.is_contiguous()
    _reshape_and_cache_kernel[(num_tokens,)](
        k, v, kv_layer, slot_mapping,
        k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        kv_layer.stride(0), kv_layer.stride(2), kv_layer.stride(3),
        KV_HEADS=kv_heads, HEAD_DIM=head_dim,
        BLOCK_H=triton.next_power_of_2(kv_heads), BLOCK_D=triton.next_power_of_2(head_dim),
        FP8_MAX=448.0 if kv_layer.dtype == torch.float8_e4m3fn else 0.0,
        num_warps=4 if kv_heads * head_dim >= 1024 else 1,
    )
