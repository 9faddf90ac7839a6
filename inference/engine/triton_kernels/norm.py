"""RMSNorm, alone and fused with the residual add that precedes it in every decoder layer
(at one row of a small model the projections around it do both: `skinny_linear.RowNorm`).

Rounding follows Hugging Face's `LlamaRMSNorm` step for step (normalise in float32, round to
the activation dtype, multiply by the weight in that dtype; the residual sum rounded to the
dtype before it is normalised), so greedy outputs match transformers on the same weights.
One program per row; the row lives in registers (hidden sizes up to 16k).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import pdl
from .pdl import begin


@triton.jit
def _rms_norm_kernel(
    X, Res, W, Out, ResOut,
    stride_x, stride_r, stride_o, stride_ro,
    eps,
    N: tl.constexpr, BLOCK: tl.constexpr, HAS_RESIDUAL: tl.constexpr, PDL: tl.constexpr,
):
    begin(PDL)
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < N
    x = tl.load(X + row * stride_x + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        r = tl.load(Res + row * stride_r + offs, mask=mask, other=0.0).to(tl.float32)
        xs = (x + r).to(ResOut.dtype.element_ty)
        tl.store(ResOut + row * stride_ro + offs, xs, mask=mask)
        x = xs.to(tl.float32)
    var = tl.sum(x * x, 0) / N
    y = (x * tl.math.rsqrt(var + eps)).to(Out.dtype.element_ty).to(tl.float32)
    w = tl.load(W + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(Out + row * stride_o + offs, (y * w).to(Out.dtype.element_ty), mask=mask)


def _launch(x, residual, weight, eps, out, res_out):
    n = x.shape[-1]
    rows = x.numel() // n
    if rows == 0:
        return
    block = triton.next_power_of_2(n)
    _rms_norm_kernel[(rows,)](
        x, residual if residual is not None else x, weight, out,
        res_out if res_out is not None else out,
        x.stride(-2) if x.dim() > 1 else n,
        residual.stride(-2) if residual is not None and residual.dim() > 1 else n,
        out.stride(-2) if out.dim() > 1 else n,
        res_out.stride(-2) if res_out is not None and res_out.dim() > 1 else n,
        eps, N=n, BLOCK=block, HAS_RESIDUAL=residual is not None,
        num_warps=min(16, max(1, block // 256)), **pdl.options(x),
    )


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """`x`: [rows, n] with a contiguous last dim. Returns a new tensor."""
    out = torch.empty_like(x)
    _launch(x, None, weight, eps, out, None)
    return out


def fused_add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns `(rms_norm(x + residual), x + residual)`, both new tensors."""
    out = torch.empty_like(x)
    res_out = torch.empty_like(x)
    _launch(x, residual, weight, eps, out, res_out)
    return out, res_out
