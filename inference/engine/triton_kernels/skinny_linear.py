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
(An RMSNorm prologue was measured and dropped: its pass over the whole row before the weight
stream starts cost 5-18 µs per 8B projection, far more than the norm's own launch; on
SmolLM2's 576-wide rows it saved two launches a layer but no time at one row, and an 8-row
step's graph took 22 % longer.)

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
    X, W, Bias, Y,
    M, N, K,
    stride_x, stride_w, stride_y,
    SILU_MUL: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRO_M: tl.constexpr,
    WHOLE: tl.constexpr, PDL: tl.constexpr,
):
    """One program: `BLOCK_N` output columns of every row."""
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < N
    acc = stream(X, W, M, K, stride_x, stride_w, cols, col_ok,
                 SILU_MUL, BLOCK_M, BLOCK_N, BLOCK_K, PRO_M, WHOLE, PDL)
    if HAS_BIAS:
        acc += tl.load(Bias + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    rows = tl.arange(0, BLOCK_M)
    tl.store(Y + rows[:, None] * stride_y + cols[None, :], acc.to(Y.dtype.element_ty),
             mask=(rows < M)[:, None] & col_ok[None, :])


@triton.jit
def stream(X, W, M, K, stride_x, stride_w, cols, col_ok, SILU_MUL: tl.constexpr,
           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
           PRO_M: tl.constexpr, WHOLE: tl.constexpr, PDL: tl.constexpr):
    """`x @ W[cols].T` in float32, `[BLOCK_M, BLOCK_N]`: the weight rows `cols` streamed
    through the dot one K tile at a time (`qkv_rope_cache.py` runs the same loop). With
    `SILU_MUL`, x is `silu(gate) * up` of `X = [gate | up]`, computed as each tile loads on
    `PRO_M` rows: `BLOCK_M`, or 1 for a one-row batch, whose row is then placed as row 0 of
    the dot's zero-padded tile, so padding rows cost no element-wise work.

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
        x = _x_tile(X, M, K, stride_x, rows, row_ok, ks, k_ok, SILU_MUL, BLOCK_M, PRO_M)
        acc = _product(x, w, acc, BLOCK_M)
    else:
        if PDL:
            _prefetch_l2(W, K, stride_w, cols, col_ok, BLOCK_K)
        begin(PDL)
        for k0 in range(0, K, BLOCK_K):
            kk = k0 + ks
            k_ok = kk < K
            x = _x_tile(X, M, K, stride_x, rows, row_ok, kk, k_ok, SILU_MUL, BLOCK_M, PRO_M)
            w = _w_tile(W, stride_w, cols, col_ok, kk, k_ok)
            acc = _product(x, w, acc, BLOCK_M)
    return acc


@triton.jit
def _x_tile(X, M, K, stride_x, rows, row_ok, kk, k_ok, SILU_MUL: tl.constexpr,
            BLOCK_M: tl.constexpr, PRO_M: tl.constexpr):
    """The activations' K tile `kk` (zeros past K and M), `[BLOCK_M, len(kk)]`."""
    if SILU_MUL:
        prow = tl.arange(0, PRO_M)
        mask = (prow < M)[:, None] & k_ok[None, :]
        gate = tl.load(X + prow[:, None] * stride_x + kk[None, :], mask=mask, other=0.0)
        up = tl.load(X + prow[:, None] * stride_x + K + kk[None, :], mask=mask, other=0.0)
        g = gate.to(tl.float32)
        dtype = X.dtype.element_ty
        act = (g / (1.0 + tl.exp(-g))).to(dtype).to(tl.float32)
        x = (act * up.to(tl.float32)).to(dtype)
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


def skinny_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    silu_mul: bool = False,
    tile: Tile | None = None,
) -> torch.Tensor:
    """`linear(x)`, or with `silu_mul` `linear(silu(gate) * up)` of `x = [gate | up]`.

    `x`: [M, K] (M ≤ MAX_ROWS; [M, 2K] with `silu_mul`) with a contiguous last dim;
    `weight`: [N, K] contiguous, as `nn.Linear` holds it. `tile` overrides `tile_for`
    (benchmarks). Returns a new [M, N] tensor.
    """
    m = x.shape[0]
    n, k = weight.shape
    y = torch.empty(m, n, dtype=x.dtype, device=x.device)
    if m == 0:
        return y
    t = tile or tile_for(m, n, k, pdl.enabled(x))
    assert x.stride(-1) == 1 and weight.stride(-1) == 1 and m <= t.block_m
    _skinny_linear_kernel[(triton.cdiv(n, t.block_n),)](
        x, weight, bias if bias is not None else weight, y,
        m, n, k,
        x.stride(0), weight.stride(0), y.stride(0),
        SILU_MUL=silu_mul, HAS_BIAS=bias is not None,
        BLOCK_M=t.block_m, BLOCK_N=t.block_n, BLOCK_K=t.block_k,
        PRO_M=1 if m == 1 else t.block_m, WHOLE=k <= t.block_k,
        num_warps=t.warps, num_stages=t.stages, **pdl.options(x),
    )
    return y
