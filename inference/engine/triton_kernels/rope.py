"""Rotary position embedding (rotate-half / NeoX layout, as Hugging Face Llama) applied in
place to the query and key heads of one step, one program per token.

`cos`, `sin`: float32 tables `[max_position, head_dim // 2]` (Llama-3 scaling already folded
into the frequencies). They are rounded to the activation dtype and each product rounded as
transformers does (`q * cos + rotate_half(q) * sin` in that dtype). `q` and `k` may be strided
views of the fused QKV output (last dim contiguous).

The model's CUDA path runs `qkv_rope_cache.py` (RoPE inside a small batch's QKV projection)
or `rope_cache.py` (RoPE inside the KV write); both share this file's rotation, and
`apply_rope` is their tested reference.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def rotated(ptr, mask, c, s, HALF: tl.constexpr):
    """The two halves at `ptr` rotated, in the tensor's dtype, each product rounded to it as
    transformers' rotate_half does."""
    x1 = tl.load(ptr, mask=mask, other=0.0)
    x2 = tl.load(ptr + HALF, mask=mask, other=0.0)
    return rotate_pair(x1, x2, c, s)


@triton.jit
def rotate_pair(x1, x2, c, s):
    """Halves `x1`, `x2` (the activations' dtype) rotated by `c`, `s` (float32, already
    rounded to that dtype), each product rounded as transformers' rotate_half does."""
    dt = x1.dtype
    a, b = x1.to(tl.float32), x2.to(tl.float32)
    o1 = (a * c).to(dt).to(tl.float32) - (b * s).to(dt).to(tl.float32)
    o2 = (b * c).to(dt).to(tl.float32) + (a * s).to(dt).to(tl.float32)
    return o1.to(dt), o2.to(dt)


@triton.jit
def rotate(ptr, mask, c, s, HALF: tl.constexpr):
    """Rotate the two halves at `ptr` in place (`rotated`)."""
    o1, o2 = rotated(ptr, mask, c, s, HALF)
    tl.store(ptr, o1, mask=mask)
    tl.store(ptr + HALF, o2, mask=mask)


@triton.jit
def token_rope(Pos, Cos, Sin, t, stride_cos, dt, BLOCK_H: tl.constexpr, HALF: tl.constexpr,
               BLOCK_HALF: tl.constexpr):
    """Token `t`'s head and half-dim offsets, the half-dim mask, and its position's rows of
    the tables rounded to the activations' dtype `dt`: (offs_h, offs_d, d_mask, cos, sin)."""
    pos = tl.load(Pos + t).to(tl.int64)
    offs_h = tl.arange(0, BLOCK_H)[:, None]
    offs_d = tl.arange(0, BLOCK_HALF)[None, :]
    d_mask = offs_d < HALF
    c = tl.load(Cos + pos * stride_cos + offs_d, mask=d_mask, other=0.0).to(dt).to(tl.float32)
    s = tl.load(Sin + pos * stride_cos + offs_d, mask=d_mask, other=0.0).to(dt).to(tl.float32)
    return offs_h, offs_d, d_mask, c, s


@triton.jit
def _rope_kernel(
    Q, K, Pos, Cos, Sin,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_cos,
    Q_HEADS: tl.constexpr, K_HEADS: tl.constexpr, BLOCK_H: tl.constexpr,
    HALF: tl.constexpr, BLOCK_HALF: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64)
    offs_h, offs_d, d_mask, c, s = token_rope(Pos, Cos, Sin, t, stride_cos, Q.dtype.element_ty,
                                              BLOCK_H, HALF, BLOCK_HALF)
    rotate(Q + t * stride_qt + offs_h * stride_qh + offs_d, (offs_h < Q_HEADS) & d_mask,
           c, s, HALF)
    rotate(K + t * stride_kt + offs_h * stride_kh + offs_d, (offs_h < K_HEADS) & d_mask,
           c, s, HALF)


def apply_rope(
    q: torch.Tensor,  # [T, heads, head_dim]
    k: torch.Tensor,  # [T, kv_heads, head_dim]
    positions: torch.Tensor,  # [T] int
    cos: torch.Tensor,  # [max_position, head_dim // 2] float32
    sin: torch.Tensor,  # [max_position, head_dim // 2] float32
) -> None:
    num_tokens, q_heads, head_dim = q.shape
    k_heads = k.shape[1]
    if num_tokens == 0:
        return
    assert q.stride(-1) == 1 and k.stride(-1) == 1 and cos.stride() == sin.stride()
    half = head_dim // 2
    _rope_kernel[(num_tokens,)](
        q, k, positions, cos, sin,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), cos.stride(0),
        Q_HEADS=q_heads, K_HEADS=k_heads, BLOCK_H=triton.next_power_of_2(max(q_heads, k_heads)),
        HALF=half, BLOCK_HALF=triton.next_power_of_2(half),
        num_warps=4,
    )
