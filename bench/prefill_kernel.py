"""The prefill-attention kernel alone, at the shapes that matter: its time and TFLOP/s.

    python bench/prefill_kernel.py [--shapes chunk,long,prompt,smol-chunk]

Cold prompts (no cached prefix) in a page-16 pool, random values and block tables:
- `chunk`: the nano-vllm workload's first 16,384-token prefill chunk (the prompt lengths of
  `bench.gpu_engine.throughput_workload`), Llama-3.1-8B heads (32 query, 8 KV, 128);
- `long`: one 4,096-token prompt, 8B heads;
- `prompt`: one 200-token prompt, 8B heads (a first token's prefill);
- `smol-chunk`: the same chunk with SmolLM2-135M heads (9 query, 3 KV, 64).
For each, the kernel's time (CUDA events over a CUDA graph of 20 launches, so host launch
time stays out) and its causal attention TFLOP/s (4 x heads x head_dim x the visible
query-key pairs). The kernel's API is unchanged since the first GPU wave, so the file runs
in any tree to time that tree's kernel. Prints one JSON line per shape and a table last.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.graph_timing import graph_us
from inference.engine.triton_kernels import prefill_attention as pa

PAGE = 16
CHUNK = 16384


def chunk_lengths() -> list[int]:
    """Prompt lengths of the workload's first chunk: `throughput_workload`'s prompts in order,
    the last one cut where the chunk reaches CHUNK tokens."""
    from bench.gpu_engine import throughput_workload

    lens, total = [], 0
    for prompt in throughput_workload()[0]:
        n = min(len(prompt), CHUNK - total)
        lens.append(n)
        total += n
        if total == CHUNK:
            break
    return lens


SHAPES = {  # name: (prompt lengths, heads, kv_heads, head_dim)
    "chunk": (chunk_lengths(), 32, 8, 128),
    "long": ([4096], 32, 8, 128),
    "prompt": ([200], 32, 8, 128),
    "smol-chunk": (chunk_lengths(), 9, 3, 64),
}


def problem(lens: list[int], heads: int, kv_heads: int, head_dim: int):
    blocks = [(n + PAGE - 1) // PAGE for n in lens]
    perm = torch.randperm(sum(blocks)) + 1  # block 0 unused, as in the engine's pool
    tables = torch.zeros(len(lens), max(blocks), dtype=torch.int32)
    at = 0
    for i, nb in enumerate(blocks):
        tables[i, :nb] = perm[at : at + nb]
        at += nb
    pool = torch.randn(2, sum(blocks) + 1, PAGE, kv_heads, head_dim, device="cuda",
                       dtype=torch.bfloat16)
    q = torch.randn(sum(lens), heads, head_dim, device="cuda", dtype=torch.bfloat16)
    qsl = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)
    return q, pool, tables.cuda(), torch.tensor(lens, dtype=torch.int32).cuda(), qsl.cuda()


def time_us(args, max_q: int, head_dim: int) -> float:
    out = torch.empty_like(args[0])
    pa.prefill_attention(*args, max_q, head_dim**-0.5, out=out)  # compiles
    return graph_us(lambda: pa.prefill_attention(*args, max_q, head_dim**-0.5, out=out))


def measure(name: str) -> dict:
    lens, heads, kv_heads, head_dim = SHAPES[name]
    args = problem(lens, heads, kv_heads, head_dim)
    flop = sum(4 * heads * head_dim * n * (n + 1) / 2 for n in lens)
    us = time_us(args, max(lens), head_dim)
    return {"shape": name, "seqs": len(lens), "tokens": sum(lens), "us": round(us, 1),
            "tflops": round(flop / us / 1e6, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default=",".join(SHAPES))
    args = ap.parse_args()
    results = []
    for name in args.shapes.split(","):
        r = measure(name)
        print(json.dumps(r), flush=True)
        results.append(r)
    print("\n| shape | sequences | tokens | us | TFLOP/s |")
    for r in results:
        print(f"| {r['shape']} | {r['seqs']} | {r['tokens']} | {r['us']} | {r['tflops']} |")


if __name__ == "__main__":
    main()
