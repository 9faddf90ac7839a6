"""The skinny linear kernel (`triton_kernels/skinny_linear.py`) against cuBLAS, per projection
of a small decode batch, and a sweep of its tiles.

    python bench/skinny_linear.py [--rows 1,8] [--sweep] [--out DIR]

For the Llama-3.1-8B and SmolLM2-135M projections, bf16, timed as calls captured in one CUDA
graph (host launch time stays out), each call on its own copy of the weight, with copies
enough to exceed 256 MiB, so every call reads its weight from HBM as a decode step does,
never from L2:
- `cublas`: `F.linear`, as the layer ran before the skinny kernel (the down projection with
  the SiLU·mul kernel before it);
- `skinny`: the skinny kernel at `tile_for`'s tile (the down projection at one row with the
  SiLU·mul fused in, at more rows after the separate SiLU·mul kernel, as the model runs it).
`--sweep` times every tile of a grid at one row and prints the best per shape.
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
from inference.engine.triton_kernels.skinny_linear import Tile, skinny_linear, tile_for

SHAPES = {  # name: (out_features, in_features, SiLU·mul before it)
    "8b.qkv": (6144, 4096, False), "8b.o": (4096, 4096, False),
    "8b.gate_up": (28672, 4096, False), "8b.down": (4096, 14336, True),
    "smol.qkv": (960, 576, False), "smol.o": (576, 576, False),
    "smol.gate_up": (3072, 576, False), "smol.down": (576, 1536, True),
}
ROTATE_BYTES = 256 << 20


def rotating_us(make_call: Callable[[torch.Tensor], Callable[[], object]],
                weights: list[torch.Tensor]) -> float:
    """µs per call, one call per weight copy in the graph (each reads its copy from HBM)."""
    calls = [make_call(w) for w in weights]
    calls[0]()  # compile / pick the library kernel outside the capture
    index = itertools.count()
    return graph_us(lambda: calls[next(index) % len(calls)](), reps=len(calls))


def cublas(x: torch.Tensor, silu: bool) -> Callable:
    if silu:
        return lambda w: lambda: F.linear(silu_and_mul(x), w)
    return lambda w: lambda: F.linear(x, w)


def skinny(x: torch.Tensor, silu: bool, tile: Tile | None = None) -> Callable:
    if silu and x.shape[0] > 1:  # as the model runs it: the separate kernel, then skinny
        return lambda w: lambda: skinny_linear(silu_and_mul(x), w, tile=tile)
    return lambda w: lambda: skinny_linear(x, w, silu_mul=silu, tile=tile)


def sweep_tiles() -> list[Tile]:
    dot = [Tile(16, n, k, w, s) for n, k, w, s in
           itertools.product((16, 32, 64), (128, 256, 512), (4, 8), (3, 4))]
    fma = [Tile(1, n, k, w, s) for n, k, w, s in
           itertools.product((4, 8, 16), (256, 512), (2, 4, 8), (2, 3))]
    return dot + fma


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="1,8")
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    results: dict = {}
    for name, (n, k, silu) in SHAPES.items():
        copies = max(2, -(-ROTATE_BYTES // (2 * n * k)))
        weights = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
                   for _ in range(copies)]
        gb = 2 * n * k / 1e9
        for rows in [int(r) for r in args.rows.split(",")]:
            x = torch.randn(rows, 2 * k if silu else k, device="cuda", dtype=torch.bfloat16)
            row = {"cublas": rotating_us(cublas(x, silu), weights),
                   "skinny": rotating_us(skinny(x, silu), weights),
                   "tile": tuple(tile_for(rows, n, k))}
            if args.sweep and rows == 1:
                timed = []
                for t in sweep_tiles():
                    try:
                        timed.append((rotating_us(skinny(x, silu, t), weights), t))
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
    print(f"{'projection':<18}{'cublas':>8}{'skinny':>8}{'TB/s':>6}  best swept")
    for key, r in results.items():
        best = r.get("sweep", [("", "")])[0]
        print(f"{key:<18}{r['cublas']:>8.2f}{r['skinny']:>8.2f}{r['skinny_tbs']:>6.2f}  {best}")


if __name__ == "__main__":
    main()
