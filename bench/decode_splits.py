"""Where one split stops paying: decode attention with one split against the split count of
the full-span decode graph, by batch and context (`inference/engine/decode_splits.py`'s
`ONE_SPLIT_SPAN`).

    python bench/decode_splits.py [--out DIR]

For SmolLM2's heads (9 query, 3 KV, dim 64) and Llama-3.1-8B's (32, 8, 128), a bf16 pool,
batches 1..32 with every sequence at the same context: the kernel's microseconds per call
(split + merge where it splits) inside a CUDA graph of 20 launches (`graph_timing.graph_us`),
with one split and with the splits a graph captured for 4,096 tokens launches. Prints a
table per head shape and, per batch, the longest context at which one split is no slower;
`decode_splits.json` under --out. `--tiles`: also one split under every candidate tile
(`TILE_CANDIDATES`, and 256-token tiles: one split walks its context alone, so a longer tile
may pay there) at batches 1 and 8 and contexts 256-1,024, the best of them beside the tile
in use.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.decode_tiles import problem, time_us
from inference.engine.decode_splits import decode_num_splits
from inference.engine.triton_kernels import decode_attention as da

HEADS = {"smollm2": (9, 3, 64), "8b": (32, 8, 128)}
BATCHES = (1, 2, 4, 8, 16, 32)
CONTEXTS = (64, 128, 256, 384, 512, 768, 1024, 1536, 2048)
SPAN = 4096
ONE_SPLIT_TILES = [*da.TILE_CANDIDATES, *((256, st, w) for st in (2, 3) for w in (4, 8))]


def sweep(name: str, sms: int) -> dict:
    _, kv_heads, head_dim = HEADS[name]
    rows = {}
    for batch in BATCHES:
        splits = decode_num_splits(batch, kv_heads, SPAN, head_dim, sms)
        if splits == 1:
            continue
        row = {"splits": splits, "contexts": {}}
        for ctx in CONTEXTS:
            q, pool, tables, lens = problem(batch, ctx, ctx + 1, heads=HEADS[name])
            kv = pool.to(torch.bfloat16)
            one, out1 = time_us(q, kv, tables, lens, 1)
            many, outn = time_us(q, kv, tables, lens, splits)
            err = ((out1 - outn).norm() / outn.norm()).item()
            row["contexts"][ctx] = {"one_us": round(one, 2), "split_us": round(many, 2),
                                    "rel_err": err}
        row["one_split_up_to"] = max((c for c in CONTEXTS if all(
            row["contexts"][d]["one_us"] <= row["contexts"][d]["split_us"]
            for d in CONTEXTS if d <= c)), default=0)
        rows[batch] = row
    return {"heads": name, "shape": HEADS[name], "batches": rows}


def one_split_tiles(name: str) -> list[dict]:
    """One split under each candidate tile: does another tile move the turn later?"""
    rows = []
    for batch in (1, 8):
        for ctx in (256, 512, 1024):
            q, pool, tables, lens = problem(batch, ctx, ctx + 1, heads=HEADS[name])
            kv = pool.to(torch.bfloat16)
            current = time_us(q, kv, tables, lens, 1)[0]
            saved, timed = da.TILES[torch.bfloat16], {}
            try:
                for tile in ONE_SPLIT_TILES:
                    da.TILES[torch.bfloat16] = tile
                    try:
                        timed[tile] = time_us(q, kv, tables, lens, 1)[0]
                    except Exception:  # out of shared memory or registers for this tile
                        continue
            finally:
                da.TILES[torch.bfloat16] = saved
            best = min(timed, key=timed.get)
            rows.append({"heads": name, "batch": batch, "context": ctx, "current_us": current,
                         "best_tile": list(best), "best_us": timed[best]})
            print(f"{name} batch {batch} context {ctx}: one split {current:.1f} us with "
                  f"{saved}, {timed[best]:.1f} with {best}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--tiles", action="store_true")
    args = ap.parse_args()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    results = [sweep(name, sms) for name in HEADS]
    tiles = [r for name in HEADS for r in one_split_tiles(name)] if args.tiles else []
    with open(os.path.join(args.out, "decode_splits.json"), "w") as f:
        json.dump({"splits": results, "one_split_tiles": tiles}, f, indent=1)
    for r in results:
        print(f"\n{r['heads']} heads {r['shape']}: us with one split / with the 4,096-token "
              "graph's splits")
        print("| batch (splits) | " + " | ".join(str(c) for c in CONTEXTS)
              + " | one split no slower up to |")
        for batch, row in r["batches"].items():
            cells = [f"{v['one_us']:.1f} / {v['split_us']:.1f}"
                     for v in row["contexts"].values()]
            print(f"| {batch} ({row['splits']}) | " + " | ".join(cells)
                  + f" | {row['one_split_up_to']} |")
        bad = [(b, c) for b, row in r["batches"].items() for c, v in row["contexts"].items()
               if v["rel_err"] > 0.01]
        if bad:
            print(f"outputs differ (> 1 %) at {bad}")


if __name__ == "__main__":
    main()
