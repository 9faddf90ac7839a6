"""The decode step's GEMMs alone under each BLAS library torch can call: does either beat the
default at the shapes that bound batch-1 decode?

    python bench/blas_backends.py [--rows 1,64,200] [--out DIR]

For the Llama-3.1-8B projections (fused QKV, O, fused gate-up, down, LM head) and SmolLM2-135M's,
bf16, `x @ W.T` with `rows` rows, timed as 20 calls captured in one CUDA graph (so host launch
time stays out) under `torch.backends.cuda.preferred_blas_library` "cublas" and "cublaslt";
weight bytes over time gives GB/s. Prints one JSON line and a table last.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.graph_timing import graph_us

SHAPES = {  # name: (out_features, in_features)
    "8b.qkv": (6144, 4096), "8b.o": (4096, 4096), "8b.gate_up": (28672, 4096),
    "8b.down": (4096, 14336), "8b.lm_head": (128256, 4096),
    "smol.qkv": (960, 576), "smol.o": (576, 576), "smol.gate_up": (3072, 576),
    "smol.down": (576, 1536),
}


def time_us(w: torch.Tensor, rows: int) -> float:
    x = torch.randn(rows, w.shape[1], device="cuda", dtype=w.dtype)
    out = F.linear(x, w)  # warm-up: the library picks its kernel here
    return graph_us(lambda: torch.mm(x, w.t(), out=out))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="1,64,200")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    rows = [int(r) for r in args.rows.split(",")]
    results: dict = {}
    for name, (n, k) in SHAPES.items():
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
        for lib in ("cublas", "cublaslt"):
            torch.backends.cuda.preferred_blas_library(lib)
            for m in rows:
                us = time_us(w, m)
                results[f"{name} m={m} {lib}"] = {"us": round(us, 2),
                                                  "gb_s": round(w.nbytes / us / 1e3)}
        del w
    print(json.dumps(results), flush=True)
    with open(os.path.join(args.out, "blas_backends.json"), "w") as f:
        json.dump(results, f, indent=1)
    print("| shape | rows | cublas us (GB/s) | cublaslt us (GB/s) |")
    for name in SHAPES:
        for m in rows:
            a, b = results[f"{name} m={m} cublas"], results[f"{name} m={m} cublaslt"]
            print(f"| {name} | {m} | {a['us']} ({a['gb_s']}) | {b['us']} ({b['gb_s']}) |")


if __name__ == "__main__":
    main()
