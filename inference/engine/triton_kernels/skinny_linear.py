"""Skinny linears: `y = prologue(x) @ W.T (+ bias)` for the few rows of a small decode batch,
with the element-wise step that precedes the projection in a decoder layer done in the same
kernel, so it never makes a launch of its own.

At a few rows a projection reads its whole weight once and does almost no arithmetic: it is
bound by memory, and at SmolLM2's size by the latency of each launch. cuBLAS spends a launch
on the projection and, for the down projection, a second on its split-K reduce; the layer
spends one more on the RMSNorm or SiLU·mul before it. Here one program owns `BLOCK_N` output
columns for every row and streams their weight rows once; the prologue is recomputed by every
program from the layer's input (a few KiB, read from L2), which costs far less than a launch.

Prologues (`Prologue`), each rounding exactly as its own kernel does (norm.py, activation.py),
so a skinny step computes the same projection input bit for bit:
- `NONE`: x as it is.
- `RMS_NORM`: `rms_norm(x) * norm_w` (the first layer, no residual yet).
- `ADD_RMS_NORM`: `h = x + residual` rounded to the dtype, written once to `res_out` (the new
  residual stream), then `rms_norm(h) * norm_w`.
- `SILU_MUL`: x is `[rows, 2K]`, gate then up; `silu(gate) * up`.

The products accumulate in float32 in K order per tile (not cuBLAS's order), so the outputs
equal `F.linear` within float32 rounding of the sum, not bit for bit. Half dtypes only
(bf16, fp16): the tensor-core dot and the tiles are sized for them.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import torch
import triton
import triton.language as tl

MAX_ROWS = 16  # the dot's row tile: a batch of up to this many rows runs in one tile


class Prologue(enum.IntEnum):
    NONE = 0
    RMS_NORM = 1
    ADD_RMS_NORM = 2
    SILU_MUL = 3


@triton.jit
def _residual_sum(X, Res, rows, kk, mask, stride_x, stride_r, ADD: tl.constexpr):
    """x (+ residual) over one K tile, rounded to the activation dtype, in float32."""
    x = tl.load(X + rows[:, None] * stride_x + kk[None, :], mask=mask, other=0.0)
    if ADD:
        r = tl.load(Res + rows[:, None] * stride_r + kk[None, :], mask=mask, other=0.0)
        x = (x.to(tl.float32) + r.to(tl.float32)).to(X.dtype.element_ty)
    return x.to(tl.float32)


@triton.jit
def _skinny_linear_kernel(
    X, Res, NormW, W, Bias, Y, ResOut,
    M, N, K,
    stride_x, stride_r, stride_w, stride_y, stride_ro,
    eps,
    PROLOGUE: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRO_M: tl.constexpr,
):
    """One program: `BLOCK_N` output columns of every row. The prologue runs on `PRO_M` rows:
    `BLOCK_M`, or 1 for a one-row batch, whose row is then placed as row 0 of the dot's
    zero-padded tile, so padding rows cost no element-wise work."""
    pid = tl.program_id(0)
    rows = tl.arange(0, BLOCK_M)
    row_ok = rows < M
    prow = tl.arange(0, PRO_M)  # the rows the prologue computes
    prow_ok = prow < M
    cols = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < N
    ks = tl.arange(0, BLOCK_K)
    dtype = Y.dtype.element_ty
    norm = PROLOGUE == 1 or PROLOGUE == 2
    add = PROLOGUE == 2

    inv_rms = tl.zeros([PRO_M], tl.float32)
    if norm:  # pass 1: the rows' RMS (and program 0 writes the new residual stream)
        squares = tl.zeros([PRO_M], tl.float32)
        for k0 in range(0, K, BLOCK_K):
            kk = k0 + ks
            mask = prow_ok[:, None] & (kk < K)[None, :]
            h = _residual_sum(X, Res, prow, kk, mask, stride_x, stride_r, add)
            squares += tl.sum(h * h, 1)
            if add:  # noqa: SIM102 (a constexpr test, then a runtime one: Triton compiles each)
                if pid == 0:
                    tl.store(ResOut + prow[:, None] * stride_ro + kk[None, :], h.to(dtype),
                             mask=mask)
        inv_rms = tl.math.rsqrt(squares / K + eps)

    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + ks
        k_ok = kk < K
        mask = prow_ok[:, None] & k_ok[None, :]
        if norm:
            h = _residual_sum(X, Res, prow, kk, mask, stride_x, stride_r, add)
            h = (h * inv_rms[:, None]).to(dtype).to(tl.float32)
            nw = tl.load(NormW + kk, mask=k_ok, other=0.0).to(tl.float32)
            x = (h * nw[None, :]).to(dtype)
        elif PROLOGUE == 3:
            gate = tl.load(X + prow[:, None] * stride_x + kk[None, :], mask=mask, other=0.0)
            up = tl.load(X + prow[:, None] * stride_x + K + kk[None, :], mask=mask, other=0.0)
            g = gate.to(tl.float32)
            act = (g / (1.0 + tl.exp(-g))).to(dtype).to(tl.float32)
            x = (act * up.to(tl.float32)).to(dtype)
        else:
            x = tl.load(X + prow[:, None] * stride_x + kk[None, :], mask=mask, other=0.0)
        if PRO_M < BLOCK_M:  # the one row into row 0 of the padded tile
            x = tl.where(rows[:, None] == 0, x, 0.0).to(dtype)
        w = tl.load(W + cols[:, None] * stride_w + kk[None, :],
                    mask=col_ok[:, None] & k_ok[None, :], other=0.0)
        if BLOCK_M >= 16:  # tensor cores; the padding rows are zeros
            acc = tl.dot(x, tl.trans(w), acc)
        else:  # one or a few rows: plain FMAs, no padding
            acc += tl.sum(x.to(tl.float32)[:, None, :] * w.to(tl.float32)[None, :, :], 2)
    if HAS_BIAS:
        acc += tl.load(Bias + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(Y + rows[:, None] * stride_y + cols[None, :], acc.to(dtype),
             mask=row_ok[:, None] & col_ok[None, :])


def supports(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `skinny_linear` takes this projection: a CUDA half-dtype batch of at most
    `MAX_ROWS` rows against a weight of the same dtype."""
    return (x.is_cuda and x.dtype in (torch.bfloat16, torch.float16)
            and weight.dtype == x.dtype and x.dim() == 2 and x.shape[0] <= MAX_ROWS)


class Tile(NamedTuple):
    """A launch's tile: `block_m` 16 uses the tensor-core dot (rows padded to 16), fewer rows
    run as FMAs; `block_n` output columns per program, `block_k` weight columns per load."""

    block_m: int
    block_n: int
    block_k: int
    warps: int
    stages: int


def tile_for(m: int, n: int, k: int) -> Tile:
    """The tile for `m` rows of an N x K weight, fitted to an H200 sweep of the Llama-3.1-8B
    and SmolLM2 projections (`bench/skinny_linear.py --sweep`, docs/BENCHMARKS.md): enough
    programs to cover the SMs, long K loads where the weight is tall enough to keep the
    pipeline fed, and stages that fit shared memory (block_n * block_k * 2 B each)."""
    block_n = 16 if n <= 1024 else 64 if 4096 < n <= 8192 else 32
    if n >= 16384 or (k < 1024 and n > 2048):
        block_k = 128
    elif k >= 1024 and block_n <= 32:
        block_k = 512
    else:
        block_k = 256
    block_k = min(block_k, max(16, triton.next_power_of_2(k)))
    return Tile(16, block_n, block_k, 4, 3 if n >= 16384 else 4)


def skinny_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    prologue: Prologue = Prologue.NONE,
    residual: torch.Tensor | None = None,
    norm_weight: torch.Tensor | None = None,
    eps: float = 0.0,
    tile: Tile | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`(linear(prologue(x)), new residual)`; the residual is a new tensor for `ADD_RMS_NORM`,
    `x` itself for `RMS_NORM` (the stream starts there) and None otherwise.

    `x`: [M, K] (M ≤ MAX_ROWS; [M, 2K] for SILU_MUL) with a contiguous last dim; `weight`:
    [N, K] contiguous, as `nn.Linear` holds it. `tile` overrides `tile_for` (benchmarks).
    """
    m = x.shape[0]
    n, k = weight.shape
    y = torch.empty(m, n, dtype=x.dtype, device=x.device)
    res_out = torch.empty_like(x) if prologue == Prologue.ADD_RMS_NORM else None
    if m == 0:
        return y, res_out
    t = tile or tile_for(m, n, k)
    assert x.stride(-1) == 1 and weight.stride(-1) == 1 and m <= t.block_m
    _skinny_linear_kernel[(triton.cdiv(n, t.block_n),)](
        x, residual if residual is not None else x,
        norm_weight if norm_weight is not None else weight,
        weight, bias if bias is not None else weight, y,
        res_out if res_out is not None else y,
        m, n, k,
        x.stride(0), residual.stride(0) if residual is not None else 0, weight.stride(0),
        y.stride(0), res_out.stride(0) if res_out is not None else 0,
        eps,
        PROLOGUE=int(prologue), HAS_BIAS=bias is not None,
        BLOCK_M=t.block_m, BLOCK_N=t.block_n, BLOCK_K=t.block_k,
        PRO_M=1 if m == 1 else t.block_m,
        num_warps=t.warps, num_stages=t.stages,
    )
    if prologue == Prologue.RMS_NORM:
        return y, x
    return y, res_out
