"""The skinny linear kernel (`triton_kernels/skinny_linear.py`) against what the layer runs
without it, per projection of a small decode batch, and a sweep of its tiles.

    python bench/skinny_linear.py [--rows 1,4,8,16] [--sweep] [--out DIR]

For the Llama-3.1-8B and SmolLM2-135M projections, bf16, each with the step before it in the
layer (QKV and gate-up: add + RMSNorm; down: SiLU·mul; O: none), timed as calls captured in
one CUDA graph (host launch time stays out), each call on its own copy of the weight, with
copies enough to exceed 256 MiB, so every call reads its weight from HBM as a decode step
does, never from L2:
- `unfused`: the separate kernels the layer runs today (norm or SiLU·mul kernel, cuBLAS);
- `cublas`: the projection alone;
- `plain`: the skinny kernel on the projection alone, at `tile_for`'s tile;
- `skinny`: one skinny kernel with the step fused in, at `tile_for`'s tile.
`--sweep` times every tile of a grid, one row, step fused in, and prints the best per shape.
Prints one JSON line and a table last.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.graph_timing import graph_us
from inference.engine.triton_kernels.activation import silu_and_mul
from inference.engine.triton_kernels.norm import fused_add_rms_norm
from inference.engine.triton_kernels.skinny_linear import Prologue, Tile, skinny_linear, tile_for

P = Prologue
SHAPES = {  # name: (out_features, in_features, the step before it)
    "8b.qkv": (6144, 4096, P.ADD_RMS_NORM), "8b.o": (4096, 4096, P.NONE),
    "8b.gate_up": (28672, 4096, P.ADD_RMS_NORM), "8b.down": (4096, 14336, P.SILU_MUL),
    "smol.qkv": (960, 576, P.ADD_RMS_NORM), "smol.o": (576, 576, P.NONE),
    "smol.gate_up": (3072, 576, P.ADD_RMS_NORM), "smol.down": (576, 1536, P.SILU_MUL),
}
ROTATE_BYTES = 256 << 20
EPS = 1e-5


def rotating_us(make_call: Callable[[torch.Tensor], Callable[[], object]],
                weights: list[torch.Tensor]) -> float:
    """µs per call, one call per weight copy in the graph (each reads its copy from HBM)."""
    calls = [make_call(w) for w in weights]
    for c in calls[:1]:
        c()  # compile / pick the library kernel outside the capture
    index = iter(range(10**9))
    return graph_us(lambda: calls[next(index) % len(calls)](), reps=len(calls))


def inputs(rows: int, k: int, prologue: Prologue) -> dict[str, torch.Tensor]:
    width = 2 * k if prologue == P.SILU_MUL else k
    dev, dt = "cuda", torch.bfloat16
    return {"x": torch.randn(rows, width, device=dev, dtype=dt),
            "r": torch.randn(rows, k, device=dev, dtype=dt),
            "nw": torch.ones(k, device=dev, dtype=dt)}


def unfused(prologue: Prologue, a: dict[str, torch.Tensor]) -> Callable:
    def make(w: torch.Tensor) -> Callable[[], object]:
        if prologue == P.ADD_RMS_NORM:
            return lambda: F.linear(fused_add_rms_norm(a["x"], a["r"], a["nw"], EPS)[0], w)
        if prologue == P.SILU_MUL:
            return lambda: F.linear(silu_and_mul(a["x"]), w)
        return lambda: F.linear(a["x"], w)
    return make


def skinny(prologue: Prologue, a: dict[str, torch.Tensor], tile: Tile | None = None) -> Callable:
    def make(w: torch.Tensor) -> Callable[[], object]:
        return lambda: skinny_linear(a["x"], w, None, prologue, a["r"], a["nw"], EPS, tile=tile)
    return make


def sweep_tiles(rows: int) -> list[Tile]:
    dot = [Tile(16, n, k, w, s) for n, k, w, s in
           itertools.product((16, 32, 64), (128, 256, 512), (4, 8), (3, 4))]
    if rows > 1:
        return dot
    fma = [Tile(1, n, k, w, s) for n, k, w, s in
           itertools.product((4, 8, 16), (256, 512), (2, 4, 8), (2, 3))]
    return dot + fma


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="1,4,8,16")
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    results: dict = {}
    for name, (n, k, prologue) in SHAPES.items():
        copies = max(2, -(-ROTATE_BYTES // (2 * n * k)))
        weights = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
                   for _ in range(copies)]
        gb = 2 * n * k / 1e9
        for rows in [int(r) for r in args.rows.split(",")]:
            a = inputs(rows, k, prologue)
            plain = inputs(rows, k, P.NONE)
            row = {"unfused": rotating_us(unfused(prologue, a), weights),
                   "cublas": rotating_us(unfused(P.NONE, plain), weights),
                   "plain": rotating_us(skinny(P.NONE, plain), weights),
                   "skinny": rotating_us(skinny(prologue, a), weights),
                   "tile": tuple(tile_for(rows, n, k))}
            if args.sweep and rows == 1:
                timed = []
                for t in sweep_tiles(rows):
                    try:
                        timed.append((rotating_us(skinny(prologue, a, t), weights), t))
                    except Exception as e:  # a tile past the SM's shared memory
                        print(f"{name} m{rows} {tuple(t)}: {type(e).__name__}", file=sys.stderr)
                timed.sort()
                row["sweep"] = [(round(us, 2), tuple(t)) for us, t in timed[:5]]
            row["skinny_tbs"] = gb / row["skinny"] * 1e3
            results[f"{name}.m{rows}"] = row
        del weights
        torch.cuda.empty_cache()
    print(json.dumps(results))
    with open(os.path.join(args.out, "skinny_linear.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(f"{'projection':<18}{'unfused':>8}{'cublas':>8}{'plain':>8}{'skinny':>8}{'TB/s':>6}"
          "  best swept")
    for key, r in results.items():
        best = r.get("sweep", [("", "")])[0]
        print(f"{key:<18}{r['unfused']:>8.2f}{r['cublas']:>8.2f}{r['plain']:>8.2f}"
              f"{r['skinny']:>8.2f}{r['skinny_tbs']:>6.2f}  {best}")


if __name__ == "__main__":
    main()
