"""The CPU attention backend on one layer's step, SmolLM2-135M's heads, per batch shape: decodes
alone, and decodes beside a prompt chunk (as when a request arrives while others decode).

    python bench/cpu_attention.py [--reps 5]

Each shape: `begin_step` and `forward` of `inference.engine.torch_attention`, float32, random
K/V in a paged pool (block size 16), contexts of 300 tokens unless named; ms per layer, median
of `--reps`.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

from bench.timing import median_us
from inference.engine.attention import AttentionMetadata
from inference.engine.torch_attention import TorchAttentionBackend

BLOCK, HEADS, KV_HEADS, HEAD_DIM = 16, 9, 3, 64
SHAPES = {  # name: (new tokens per sequence, context before the step)
    "64 decodes": ([1] * 64, [300] * 64),
    "63 decodes + a 512-token prompt": ([1] * 63 + [512], [300] * 63 + [0]),
    "256 decodes": ([1] * 256, [300] * 256),
    "255 decodes + a 200-token prompt": ([1] * 255 + [200], [300] * 255 + [0]),
    "63 decodes + 1 decode at 4,000": ([1] * 64, [300] * 63 + [4000]),
    "a 2,048-token prompt alone": ([2048], [0]),
}


def metadata(q_lens: list[int], ctx: list[int]) -> tuple[AttentionMetadata, int]:
    """The step's metadata, each sequence on blocks of its own; (it, blocks used)."""
    seq_lens = [c + q for c, q in zip(ctx, q_lens, strict=True)]
    width = max(-(-s // BLOCK) for s in seq_lens)
    tables = torch.zeros(len(q_lens), width, dtype=torch.int32)
    slots, used = [], 1
    for i, s in enumerate(seq_lens):
        n = -(-s // BLOCK)
        tables[i, :n] = torch.arange(used, used + n)
        used += n
        slots += [int(tables[i, p // BLOCK]) * BLOCK + p % BLOCK for p in range(ctx[i], s)]
    starts = [0]
    for q in q_lens:
        starts.append(starts[-1] + q)
    decodes = next((i for i, q in enumerate(q_lens) if q != 1), len(q_lens))
    meta = AttentionMetadata(torch.tensor(slots), torch.tensor(starts, dtype=torch.int32),
                             torch.tensor(seq_lens, dtype=torch.int32), tables, max(q_lens),
                             max(seq_lens), decodes, list(q_lens))
    return meta, used


def layer_ms(q_lens: list[int], ctx: list[int], reps: int) -> float:
    meta, blocks = metadata(q_lens, ctx)
    t = sum(q_lens)
    kv = torch.randn(2, blocks, BLOCK, KV_HEADS, HEAD_DIM)
    q, k, v = (torch.randn(t, h, HEAD_DIM) for h in (HEADS, KV_HEADS, KV_HEADS))
    backend = TorchAttentionBackend(BLOCK)

    def step() -> None:
        backend.begin_step(meta)
        backend.forward(q, k, v, kv, meta, HEAD_DIM ** -0.5)

    return median_us(step, reps) / 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    for name, (q_lens, ctx) in SHAPES.items():
        print(f"{name}: {layer_ms(q_lens, ctx, args.reps):.2f} ms a layer")


if __name__ == "__main__":
    main()
