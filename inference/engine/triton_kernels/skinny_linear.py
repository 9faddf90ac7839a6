"""Skinny linears: `y = x @ W.T (+ bias)` for the few rows of a small decode batch, and the
down projection with the SiLU·mul before it done in the same kernel at one row.

At a few rows a projection reads its whole weight once and does almost no arithmetic: it is
bound by memory, and at SmolLM2's size by the latency of each launch. One program owns
`BLOCK_N` output columns for every row and streams their weight rows through a pipelined
tensor-core dot (rows padded to 16); tiles are fitted per weight shape (`tile_for`). On the
H200, at one row, this beats cuBLAS at every projection of the Llama-3.1-8B and SmolLM2
shapes by 2-15 % and saves cuBLAS's split-K reduce launch on the down projection; at 8 and
16 rows it is within 2 % of cuBLAS or faster (docs/BENCHMARKS.md). Launched with PDL, a
program fetches its weights before it waits for the kernel before it (`stream`): a short K
as one tile, loaded whole, a long one's first tile prefetched into L2.

With `silu_mul`, x is the gate-up output `[rows, 2K]` (gate then up) and the kernel computes
`silu(gate) * up` as it loads each K tile, rounding as `activation.py` does, so the product's
input is bit for bit the separate kernel's and a launch is saved. The engine fuses it only at
one row: that row's element-wise work is computed once and placed into row 0 of the padded
tile, while at more rows the padded tile's element-wise work costs more than the launch.

The decoder layer's two RMSNorms can go the same way (`takes_norm` says where that was
measured faster: one row of SmolLM2's 576-wide stream). `skinny_linear_add` adds the residual
in the O or down projection's epilogue and writes each program's sum of squares of its
columns per row (`Summed`); the next projection, given those few sums (`RowNorm`), scales each
row as its tiles load, rounding as `norm.py` does. (A prologue that made its own pass over
the whole row before the weight stream was measured and dropped: 5-18 µs per 8B projection.)

The products accumulate in float32 in K order per tile (not cuBLAS's order), so the outputs
equal `F.linear` within float32 rounding of the sum, not bit for bit. Half dtypes only
(bf16, fp16): the tensor-core dot and the tiles are sized for them.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from . import pdl
from .pdl import begin

MAX_ROWS = 16  # the dot's row tile: a batch of up to this many rows runs in one tile
# The longest K loaded as one tile, before the PDL wait; longer rows stream. At 2048,
# SmolLM2's down projection (K = 1536) would spill registers (tests/gpu/test_skinny_compile.py).
WHOLE_MAX_K = 1024


@triton.jit
def _skinny_linear_kernel(
    X, W, Bias, Y, Res, SumsqOut, NormSumsq, NormW,
    M, N, K, NP, eps,
    stride_x, stride_w, stride_y, stride_r,
    SILU_MUL: tl.constexpr, HAS_BIAS: tl.constexpr, ADD: tl.constexpr, NORM: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRO_M: tl.constexpr,
    BLOCK_P: tl.constexpr, WHOLE: tl.constexpr, PDL: tl.constexpr,
):
    """One program: `BLOCK_N` output columns of every row."""
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < N
    acc = stream(X, W, M, K, stride_x, stride_w, cols, col_ok, SILU_MUL,
                 NORM, NormSumsq, NormW, NP, eps,
                 BLOCK_M, BLOCK_N, BLOCK_K, PRO_M, BLOCK_P, WHOLE, PDL)
    if HAS_BIAS:
        acc += tl.load(Bias + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    rows = tl.arange(0, BLOCK_M)
    row_ok = rows < M
    mask = row_ok[:, None] & col_ok[None, :]
    y = acc.to(Y.dtype.element_ty)
    if ADD:  # the residual stream, rounded as norm.py's fused add rounds it, and its sums
        r = tl.load(Res + rows[:, None] * stride_r + cols[None, :], mask=mask, other=0.0)
        y = (y.to(tl.float32) + r.to(tl.float32)).to(Y.dtype.element_ty)
        yf = y.to(tl.float32)
        tl.store(SumsqOut + rows * tl.num_programs(0) + tl.program_id(0), tl.sum(yf * yf, 1),
                 mask=row_ok)
    tl.store(Y + rows[:, None] * stride_y + cols[None, :], y, mask=mask)


@triton.jit
def stream(X, W, M, K, stride_x, stride_w, cols, col_ok, SILU_MUL: tl.constexpr,
           NORM: tl.constexpr, NormSumsq, NormW, NP, eps,
           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
           PRO_M: tl.constexpr, BLOCK_P: tl.constexpr, WHOLE: tl.constexpr, PDL: tl.constexpr):
    """`x @ W[cols].T` in float32, `[BLOCK_M, BLOCK_N]`: the weight rows `cols` streamed
    through the dot one K tile at a time (`qkv_rope_cache.py` runs the same loop). With
    `SILU_MUL`, x is `silu(gate) * up` of `X = [gate | up]`, computed as each tile loads on
    `PRO_M` rows: `BLOCK_M`, or 1 for a one-row batch, whose row is then placed as row 0 of
    the dot's zero-padded tile, so padding rows cost no element-wise work. With `NORM` (on
    `PRO_M` rows likewise), x is `rms_norm(X) * NormW`: each row is scaled as its tiles load,
    by the mean of its squares summed from the `NP` partial sums that the projection which
    wrote X left in `NormSumsq` (`[M, NP]`, `skinny_linear_add`).

    It holds the kernel's `begin(PDL)`, which the caller must not have run, and nothing of the
    caller before it may touch memory. No kernel of a step writes a weight, so the weight's
    trip from memory starts before the wait and overlaps the previous kernel's tail: with
    `WHOLE` (one tile covers K) the whole tile is loaded first; otherwise the first tile's
    lines are prefetched into L2 (on an H100 the 8B's decode graph was 1.5 % shorter with
    one tile prefetched, 1.1 % with two, and 1 % longer with four: docs/BENCHMARKS.md)."""
    rows = tl.arange(0, BLOCK_M)
    row_ok = rows < M
    ks = tl.arange(0, BLOCK_K)
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    if WHOLE:
        k_ok = ks < K
        w = _w_tile(W, stride_w, cols, col_ok, ks, k_ok)
        begin(PDL)
        rstd = _rstd(NormSumsq, M, K, NP, eps, NORM, PRO_M, BLOCK_P)
        x = _x_tile(X, M, K, stride_x, rows, row_ok, ks, k_ok, SILU_MUL, NORM, rstd, NormW,
                    BLOCK_M, PRO_M)
        acc = _product(x, w, acc, BLOCK_M)
    else:
        if PDL:
            _prefetch_l2(W, K, stride_w, cols, col_ok, BLOCK_K)
        begin(PDL)
        rstd = _rstd(NormSumsq, M, K, NP, eps, NORM, PRO_M, BLOCK_P)
        for k0 in range(0, K, BLOCK_K):
            kk = k0 + ks
            k_ok = kk < K
            x = _x_tile(X, M, K, stride_x, rows, row_ok, kk, k_ok, SILU_MUL, NORM, rstd,
                        NormW, BLOCK_M, PRO_M)
            w = _w_tile(W, stride_w, cols, col_ok, kk, k_ok)
            acc = _product(x, w, acc, BLOCK_M)
    return acc


@triton.jit
def _rstd(NormSumsq, M, K, NP, eps, NORM: tl.constexpr, PRO_M: tl.constexpr,
          BLOCK_P: tl.constexpr):
    """The first `PRO_M` rows' `1 / sqrt(mean(x²) + eps)` from their `NP` partial sums (ones
    without `NORM`), float32."""
    prow = tl.arange(0, PRO_M)
    if NORM:
        p = tl.arange(0, BLOCK_P)
        parts = tl.load(NormSumsq + prow[:, None] * NP + p[None, :],
                        mask=(prow < M)[:, None] & (p < NP)[None, :], other=0.0)
        return tl.math.rsqrt(tl.sum(parts, 1) / K + eps)
    return tl.full(prow.shape, 1.0, tl.float32)


@triton.jit
def _x_tile(X, M, K, stride_x, rows, row_ok, kk, k_ok, SILU_MUL: tl.constexpr,
            NORM: tl.constexpr, rstd, NormW, BLOCK_M: tl.constexpr, PRO_M: tl.constexpr):
    """The activations' K tile `kk` (zeros past K and M), `[BLOCK_M, len(kk)]`. With `NORM`,
    normed as norm.py rounds it (scaled by the row's `rstd` in float32, rounded, times the
    weight, rounded). The element-wise work of either runs on `PRO_M` rows (`stream`)."""
    if SILU_MUL or NORM:
        dtype = X.dtype.element_ty
        prow = tl.arange(0, PRO_M)
        mask = (prow < M)[:, None] & k_ok[None, :]
        if SILU_MUL:
            gate = tl.load(X + prow[:, None] * stride_x + kk[None, :], mask=mask, other=0.0)
            up = tl.load(X + prow[:, None] * stride_x + K + kk[None, :], mask=mask, other=0.0)
            g = gate.to(tl.float32)
            act = (g / (1.0 + tl.exp(-g))).to(dtype).to(tl.float32)
            x = (act * up.to(tl.float32)).to(dtype)
        else:
            x = tl.load(X + prow[:, None] * stride_x + kk[None, :], mask=mask, other=0.0)
        if NORM:
            nw = tl.load(NormW + kk, mask=k_ok, other=0.0).to(tl.float32)
            x = (x.to(tl.float32) * rstd[:, None]).to(dtype).to(tl.float32) * nw[None, :]
            x = x.to(dtype)
        if PRO_M < BLOCK_M:  # the one row into row 0 of the padded tile
            x = tl.where(rows[:, None] == 0, x, 0.0).to(dtype)
    else:
        x = tl.load(X + rows[:, None] * stride_x + kk[None, :],
                    mask=row_ok[:, None] & k_ok[None, :], other=0.0)
    return x


@triton.jit
def _w_tile(W, stride_w, cols, col_ok, kk, k_ok):
    """The weight rows `cols`' K tile `kk` (zeros past N and K), `[len(cols), len(kk)]`."""
    return tl.load(W + cols[:, None] * stride_w + kk[None, :],
                   mask=col_ok[:, None] & k_ok[None, :], other=0.0)


@triton.jit
def _product(x, w, acc, BLOCK_M: tl.constexpr):
    """`acc + x @ w.T` in float32."""
    if BLOCK_M >= 16:  # tensor cores; the padding rows are zeros
        acc = tl.dot(x, tl.trans(w), acc)
    else:  # one or a few rows: plain FMAs, no padding
        acc += tl.sum(x.to(tl.float32)[:, None, :] * w.to(tl.float32)[None, :, :], 2)
    return acc


@triton.jit
def _prefetch_l2(W, K, stride_w, cols, col_ok, SPAN: tl.constexpr):
    """Hint L2 to fetch the weight rows `cols`' first `SPAN` columns, one 128-byte line per
    address (addresses out of range fall back to `W`, which is valid)."""
    kk = tl.arange(0, SPAN // 64) * 64  # a line is 64 elements of a half dtype
    ok = col_ok[:, None] & (kk < K)[None, :]
    lines = tl.where(ok, W + cols[:, None] * stride_w + kk[None, :], W)
    tl.inline_asm_elementwise("prefetch.global.L2 [$1];\n\tmov.u32 $0, 0;", "=r,l", [lines],
                              dtype=tl.int32, is_pure=False, pack=1)


def supports(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `skinny_linear` takes this projection: a CUDA half-dtype batch of at most
    `MAX_ROWS` rows against a weight of the same dtype."""
    return (x.is_cuda and x.dtype in (torch.bfloat16, torch.float16)
            and weight.dtype == x.dtype and x.dim() == 2 and x.shape[0] <= MAX_ROWS)


def takes_norm(x: torch.Tensor, k: int) -> bool:
    """Whether the RMSNorm before a projection of `x` over a K of `k` is best left to the
    projection (`RowNorm`, after a `skinny_linear_add`): one row, a K of one tile, PDL on.
    On an H100 that made SmolLM2's one-row decode graph 15 % shorter (0.658 -> 0.562 ms),
    but its 8-row graph 72 % longer (the norm's element-wise work on every padded row of
    the 16-row tile, at the register limit) and the 8B's one-row graph 10 % longer (a norm
    in every K tile of a streamed, latency-bound loop): docs/BENCHMARKS.md, issue 16."""
    return x.shape[0] == 1 and k <= WHOLE_MAX_K and pdl.enabled(x)


class Tile(NamedTuple):
    """A launch's tile: `block_m` 16 uses the tensor-core dot (rows padded to 16), fewer rows
    run as FMAs; `block_n` output columns per program, `block_k` weight columns per load."""

    block_m: int
    block_n: int
    block_k: int
    warps: int
    stages: int


def tile_for(m: int, n: int, k: int, early: bool = True) -> Tile:
    """The tile for `m` rows of an N x K weight, fitted to an H200 sweep of the Llama-3.1-8B
    and SmolLM2 projections (`bench/skinny_linear.py --sweep`, docs/BENCHMARKS.md): enough
    programs to cover the SMs, long K loads where the weight is tall enough to keep the
    pipeline fed, and stages that fit shared memory (block_n * block_k * 2 B each). A K of at
    most `WHOLE_MAX_K` is one tile where the weights load `early`, before the PDL wait
    (`stream`); loaded after the wait, one tile was slower than the pipelined stream (H100,
    docs/BENCHMARKS.md), so without PDL K streams."""
    block_n = 16 if n <= 1024 else 64 if 4096 < n <= 8192 else 32
    if n >= 16384 or (k < 1024 and n > 2048):
        block_k = 128
    elif k >= 1024 and block_n <= 32:
        block_k = 512
    else:
        block_k = 256
    block_k = min(block_k, max(16, triton.next_power_of_2(k)))
    if early and k <= WHOLE_MAX_K:
        block_k = max(16, triton.next_power_of_2(k))
    return Tile(MAX_ROWS, block_n, block_k, 4, 3 if n >= 16384 else 4)


class Summed(NamedTuple):
    """The residual stream as a projection left it (`skinny_linear_add`): `stream` `[M, N]`
    and each of the projection's programs' sum of squares of its columns, per row, `sumsq`
    `[M, programs]` float32: what the next projection needs to RMSNorm `stream` itself
    (`RowNorm`), with no pass over the row of its own."""

    stream: torch.Tensor
    sumsq: torch.Tensor


class RowNorm(NamedTuple):
    """An RMSNorm left to the projection that reads its input: the input's partial sums of
    squares (`Summed.sumsq`), the norm's weight and epsilon."""

    sumsq: torch.Tensor
    weight: torch.Tensor
    eps: float


def norm_operands(norm: RowNorm | None, spare: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, int, float, int]:
    """The kernels' `NormSumsq, NormW, NP, eps` for `norm` and its `BLOCK_P`; without one,
    `spare` (any tensor, never read) stands in for the pointers."""
    if norm is None:
        return spare, spare, 1, 0.0, 1
    parts = norm.sumsq.shape[1]
    return norm.sumsq, norm.weight, parts, norm.eps, triton.next_power_of_2(parts)


def skinny_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    silu_mul: bool = False,
    tile: Tile | None = None,
    norm: RowNorm | None = None,
) -> torch.Tensor:
    """`linear(x)`, or with `silu_mul` `linear(silu(gate) * up)` of `x = [gate | up]`, or with
    `norm` `linear(rms_norm(x) * norm.weight)` (`x` being the `Summed.stream` whose sums
    `norm` carries).

    `x`: [M, K] (M ≤ MAX_ROWS; [M, 2K] with `silu_mul`) with a contiguous last dim;
    `weight`: [N, K] contiguous, as `nn.Linear` holds it. `tile` overrides `tile_for`
    (benchmarks). Returns a new [M, N] tensor.
    """
    return _launch(x, weight, bias, silu_mul, tile, norm, None)[0]


def skinny_linear_add(
    x: torch.Tensor,
    weight: torch.Tensor,
    residual: torch.Tensor,
    bias: torch.Tensor | None = None,
    silu_mul: bool = False,
    tile: Tile | None = None,
) -> Summed:
    """`skinny_linear(...) + residual`, rounded to the dtype after the projection and after the
    add (as the separate projection and `fused_add_rms_norm` round them): the decoder layer's
    residual stream after its O or down projection, with the sums that let the next
    projection norm it (`RowNorm`) instead of a norm kernel between them."""
    y, sumsq = _launch(x, weight, bias, silu_mul, tile, None, residual)
    assert sumsq is not None
    return Summed(y, sumsq)


def _launch(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, silu_mul: bool,
            tile: Tile | None, norm: RowNorm | None,
            residual: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The projection, its sums where it adds `residual`: `skinny_linear`'s and
    `skinny_linear_add`'s one launch."""
    m = x.shape[0]
    n, k = weight.shape
    t = tile or tile_for(m, n, k, pdl.enabled(x))
    programs = triton.cdiv(n, t.block_n)
    y = torch.empty(m, n, dtype=x.dtype, device=x.device)
    sumsq = (torch.empty(m, programs, dtype=torch.float32, device=x.device)
             if residual is not None else None)
    if m == 0:
        return y, sumsq
    assert x.stride(-1) == 1 and weight.stride(-1) == 1 and m <= t.block_m
    if residual is not None:
        assert residual.shape == y.shape and residual.stride(-1) == 1
    norm_sumsq, norm_w, parts, eps, block_p = norm_operands(norm, y)
    _skinny_linear_kernel[(programs,)](
        x, weight, bias if bias is not None else weight, y,
        residual if residual is not None else y, sumsq if sumsq is not None else y,
        norm_sumsq, norm_w,
        m, n, k, parts, eps,
        x.stride(0), weight.stride(0), y.stride(0),
        residual.stride(0) if residual is not None else 0,
        SILU_MUL=silu_mul, HAS_BIAS=bias is not None, ADD=residual is not None,
        NORM=norm is not None,
        BLOCK_M=t.block_m, BLOCK_N=t.block_n, BLOCK_K=t.block_k,
        PRO_M=1 if m == 1 else t.block_m, BLOCK_P=block_p, WHOLE=k <= t.block_k,
        num_warps=t.warps, num_stages=t.stages, **pdl.options(x),
    )
    return y, sumsq
