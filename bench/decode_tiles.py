"""The decode-attention kernel alone: which tile and how many splits, at the shapes that matter.

    python bench/decode_tiles.py [--out DIR]

Llama-3.1-8B heads (32 query, 8 KV, head_dim 128), page 16, random pools and tables:
- `mid-run`: 181 sequences with contexts uniform in 100..1800 (the nano-vllm workload mid-run);
- `full`: 256 sequences, contexts uniform in 600..1600 (its early decode steps);
- `b1`: one sequence with a 128-token context, at every split count from 1 to the one the
  full-span decode graph uses (fixed from `max_model_len` 4096 at capture; the engine
  replays a one-split graph for contexts this short, inference/engine/decode_splits.py).
Every shape is timed at the full-span graph's split count.
For each pool dtype (bf16, fp8) and each candidate tile of `TILE_CANDIDATES`, the kernel's
time (CUDA events over a CUDA graph of 20 launches, so host launch time stays out) and the KV
bytes it must read over that time; a tile whose output differs from the default tile's by
more than 1 % (relative norm) is marked wrong.
Prints one JSON line per shape and a table last; `decode_tiles.json` under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.graph_timing import graph_us
from inference.engine.decode_splits import decode_num_splits
from inference.engine.triton_kernels import decode_attention as da

HEADS, KV_HEADS, HEAD_DIM, PAGE = 32, 8, 128, 16
SHAPES = {"mid-run": (181, 100, 1800), "full": (256, 600, 1600), "b1": (1, 128, 129)}


def problem(batch: int, lo: int, hi: int, seed: int = 0, heads: tuple[int, int, int] = (
        HEADS, KV_HEADS, HEAD_DIM)):
    """Query, a float32 pool, block tables and context lengths for `batch` sequences;
    `heads`: query heads, KV heads, head dim."""
    num_heads, kv_heads, head_dim = heads
    gen = torch.Generator().manual_seed(seed)
    lens = torch.randint(lo, hi, (batch,), generator=gen)
    blocks = (lens + PAGE - 1) // PAGE
    tables = torch.randint(1, int(blocks.sum()) + 1, (batch, int(blocks.max())), generator=gen)
    pool = torch.randn(2, int(blocks.sum()) + 1, PAGE, kv_heads, head_dim, device="cuda")
    q = torch.randn(batch, num_heads, head_dim, device="cuda", dtype=torch.bfloat16)
    return q, pool, tables.to(torch.int32).cuda(), lens.to(torch.int32).cuda()


def time_us(q, kv, tables, lens, splits: int) -> tuple[float, torch.Tensor]:
    """Microseconds per call (`graph_timing.graph_us`) and the output."""
    batch, num_heads, head_dim = q.shape
    scale = head_dim**-0.5
    out = da.decode_attention(q, kv, tables, lens, scale, splits)  # compiles
    ws = da.decode_workspace(batch, num_heads, head_dim, splits, q.device) if splits > 1 \
        else None
    us = graph_us(lambda: da.decode_attention(q, kv, tables, lens, scale, splits, out=out,
                                              workspace=ws))
    return us, out.float()


def sweep(name: str, batch: int, lo: int, hi: int) -> dict:
    q, pool, tables, lens = problem(batch, lo, hi)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    graph_splits = decode_num_splits(batch, KV_HEADS, 4096, HEAD_DIM, sms)
    res: dict = {"shape": name, "batch": batch, "context_tokens": int(lens.sum()),
                 "graph_splits": graph_splits, "dtypes": {}}
    for label, dtype in (("bf16", torch.bfloat16), ("fp8", torch.float8_e4m3fn)):
        kv = pool.to(dtype)
        gb = float(lens.sum()) * KV_HEADS * HEAD_DIM * 2 * kv.element_size() / 1e9
        saved = da.TILES.get(dtype)
        da.TILES.pop(dtype, None)
        base_us, ref = time_us(q, kv, tables, lens, graph_splits)
        tiles = {}
        for tile in da.TILE_CANDIDATES:
            da.TILES[dtype] = tile
            try:
                us, out = time_us(q, kv, tables, lens, graph_splits)
            except Exception as exc:  # out of shared memory or registers for this tile
                tiles[str(tile)] = repr(exc)[:60]
                continue
            err = ((out - ref).norm() / ref.norm()).item()
            tiles[str(tile)] = round(us, 2) if err < 0.01 else f"wrong: {err:.3f}"
        if saved is None:
            da.TILES.pop(dtype, None)
        else:
            da.TILES[dtype] = saved
        timed = {k: v for k, v in tiles.items() if isinstance(v, float)}
        best = min(timed, key=timed.get)
        current_us, _ = time_us(q, kv, tables, lens, graph_splits)
        splits = {}
        if batch == 1:  # the graph's fixed split count against the fewer a short context needs
            for n in sorted({1, 2, 4, 8, 16, graph_splits}):
                splits[n] = round(time_us(q, kv, tables, lens, n)[0], 2)
        res["dtypes"][label] = {
            "kv_gb": gb, "default_tile_us": round(base_us, 2), "current_us": round(current_us, 2),
            "best_tile": best, "best_us": timed[best],
            "best_gb_s": round(gb / (timed[best] / 1e6)),
            "current_gb_s": round(gb / (current_us / 1e6)), "tiles": tiles,
            "us_by_splits": splits}
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--shapes", default=",".join(SHAPES))
    args = ap.parse_args()
    results = []
    for name in args.shapes.split(","):
        r = sweep(name, *SHAPES[name])
        print(json.dumps(r), flush=True)
        results.append(r)
    with open(os.path.join(args.out, "decode_tiles.json"), "w") as f:
        json.dump(results, f, indent=1)
    print("\n| shape | dtype | current tile us (GB/s) | best tile | best us (GB/s) |")
    for r in results:
        for label, d in r["dtypes"].items():
            print(f"| {r['shape']} | {label} | {d['current_us']} ({d['current_gb_s']}) | "
                  f"{d['best_tile']} | {d['best_us']} ({d['best_gb_s']}) |"
                  + (f" splits {d['us_by_splits']}" if d["us_by_splits"] else ""))


if __name__ == "__main__":
    main()
