"""The CPU attention backend equals attention computed one sequence at a time, whatever the
step mixes: decodes alone, decodes beside prompt chunks (padded in separate groups), a prompt's
single last token among chunks, chunks alone, decodes whose contexts fall in different length
buckets."""

from __future__ import annotations

import pytest
import torch

from bench.cpu_attention import BLOCK, HEAD_DIM, HEADS, KV_HEADS, metadata
from inference.engine.torch_attention import TorchAttentionBackend

SHAPES = {
    "decodes": ([1, 1, 1], [5, 17, 40]),
    "decodes and chunks": ([1, 1, 9, 23], [33, 2, 0, 16]),
    "a one-token chunk among chunks": ([7, 1, 12], [0, 30, 5]),
    "chunks": ([4, 19], [0, 8]),
    "decodes of many lengths, and a chunk": ([1, 1, 1, 1, 6], [3, 290, 700, 1100, 20]),
    "a whole prompt alone": ([12], [0]),
    "a decode and a whole prompt": ([1, 12], [30, 0]),
}


def reference(q: torch.Tensor, pool: torch.Tensor, tables: torch.Tensor, q_lens: list[int],
              ctx: list[int], scale: float) -> torch.Tensor:
    """Each sequence's causal attention over its own context, in float64, no padding."""
    out, row = [], 0
    for b, (n, before) in enumerate(zip(q_lens, ctx, strict=True)):
        total = before + n
        slots = [int(tables[b, p // BLOCK]) * BLOCK + p % BLOCK for p in range(total)]
        keys = pool[0].reshape(-1, KV_HEADS, HEAD_DIM)[slots].double()
        values = pool[1].reshape(-1, KV_HEADS, HEAD_DIM)[slots].double()
        keys = keys.repeat_interleave(HEADS // KV_HEADS, dim=1)  # [total, heads, D]
        values = values.repeat_interleave(HEADS // KV_HEADS, dim=1)
        for i in range(n):
            seen = before + i + 1
            scores = torch.einsum("hd,khd->hk", q[row + i].double(), keys[:seen]) * scale
            out.append(torch.einsum("hk,khd->hd", scores.softmax(-1), values[:seen]))
        row += n
    return torch.stack(out)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_a_step_attends_as_each_sequence_alone(shape: tuple[list[int], list[int]]) -> None:
    q_lens, ctx = shape
    torch.manual_seed(3)
    meta, blocks = metadata(q_lens, ctx)
    t = sum(q_lens)
    pool = torch.randn(2, blocks, BLOCK, KV_HEADS, HEAD_DIM)
    q, k, v = (torch.randn(t, h, HEAD_DIM) for h in (HEADS, KV_HEADS, KV_HEADS))
    backend = TorchAttentionBackend(BLOCK)
    backend.begin_step(meta)
    got = backend.forward(q, k, v, pool, meta, HEAD_DIM ** -0.5)
    # forward wrote the step's K/V into the pool; the reference reads them from there
    assert torch.equal(pool[0].reshape(-1, KV_HEADS, HEAD_DIM)[meta.slot_mapping], k)
    want = reference(q, pool, meta.block_tables, q_lens, ctx, HEAD_DIM ** -0.5)
    assert got.shape == (t, HEADS, HEAD_DIM)
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)
