"""How a step is planned over the captured CUDA graphs (cuda_graphs.py), on the CPU: which
graphs, of which span, replay which sequences and rows. The replays themselves are checked
against the eager engine on a GPU (tests/gpu/test_engine_gpu.py)."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from inference.engine import decode_splits
from inference.engine.cuda_graphs import MAX_TAIL_GRAPHS, CudaGraphDecoder, _Part, _Shape
from inference.engine.torch_attention import TorchAttentionBackend

L = 1024  # max_model_len: the span of every graph here but the short decode ones


class SplitSpans(TorchAttentionBackend):
    """The Triton backend's spans (`TritonAttentionBackend.decode_spans`, which cannot be
    imported without triton) on a CPU backend."""

    def decode_spans(self, num_seqs, kv_heads, head_dim, max_model_len):
        return decode_splits.decode_spans(num_seqs, kv_heads, head_dim, max_model_len)


def planner(max_num_seqs: int = 80, max_mixed_tokens: int = 128,
            backend: TorchAttentionBackend | None = None) -> CudaGraphDecoder:
    """A decoder whose graph set is known but not captured (no GPU here): the planner reads
    only which shapes exist. Its pool: 3 KV heads of 64 dims (SmolLM2's)."""
    pool = torch.zeros(1, 2, 1, 16, 3, 64)
    dec = CudaGraphDecoder(None, backend or TorchAttentionBackend(16), pool, max_num_seqs,
                           max_model_len=L, block_size=16, max_mixed_tokens=max_mixed_tokens)
    dec.graphs = dict.fromkeys(dec._shapes())
    return dec


def test_a_step_one_graph_holds_replays_that_graph():
    dec = planner()
    assert dec._plan([1] * 5, 5, L) == (_Part(_Shape(8, 8, True, L), 0, 5, 0, 5),)
    assert dec._plan([1, 1, 30, 7], 2, L) == (_Part(_Shape(64, 64, False, L), 0, 4, 0, 39),)


def test_many_decodes_and_a_prompt_replay_a_decode_graph_then_a_mixed_graph():
    dec = planner()
    assert dec._plan([1] * 70 + [40], 70, L) == (
        _Part(_Shape(72, 72, True, L), 0, 70, 0, 70),
        _Part(_Shape(64, 64, False, L), 70, 71, 70, 110),
    )


def test_prompts_beyond_the_largest_bucket_are_packed_whole_in_order():
    dec = planner(max_mixed_tokens=512)
    assert dec._plan([1] * 10 + [300, 200, 100], 10, L) == (
        _Part(_Shape(16, 16, True, L), 0, 10, 0, 10),
        _Part(_Shape(512, 64, False, L), 10, 12, 10, 510),
        _Part(_Shape(128, 64, False, L), 12, 13, 510, 610),
    )
    assert dec._plan([300, 300], 0, L) == (
        _Part(_Shape(512, 64, False, L), 0, 1, 0, 300),
        _Part(_Shape(512, 64, False, L), 1, 2, 300, 600),
    )


def test_a_mixed_graph_takes_at_most_its_sequences():
    dec = planner(max_num_seqs=256)
    parts = dec._plan([2] * 130, 0, L)
    assert [(p.first, p.end) for p in parts] == [(0, 64), (64, 128), (128, 130)]
    assert [p.shape.tokens for p in parts] == [128, 128, 16]


def test_a_step_no_plan_fits_runs_eagerly():
    dec = planner()
    assert dec._plan([1] * 3 + [129], 3, L) == ()  # one chunk longer than the largest bucket
    assert dec._plan([100] * (MAX_TAIL_GRAPHS + 1), 0, L) == ()  # too many graphs
    assert dec._plan([1] * 90, 90, L) == ()  # more decodes than the largest decode graph
    assert planner(max_mixed_tokens=0)._plan([1, 1, 40], 2, L) == ()  # decode graphs only
    uncaptured = CudaGraphDecoder(None, TorchAttentionBackend(16),
                                   torch.zeros(1, 2, 1, 16, 3, 64), 8, L, 16, 128)
    assert not uncaptured.fits([1], 1)


@pytest.mark.parametrize("backend", [TorchAttentionBackend(16), SplitSpans(16)],
                         ids=["one-span", "split-spans"])
def test_every_plan_covers_the_step_once_within_its_graphs(backend):
    dec = planner(max_num_seqs=256, max_mixed_tokens=256, backend=backend)
    rng, planned = random.Random(5), 0
    for _ in range(2000):
        decodes = rng.choice([0, 1, 7, 64, 100, 200])
        lens = [1] * decodes + [rng.choice([1, 2, 17, 90, 200, 300])
                                for _ in range(rng.randrange(0 if decodes else 1, 12))]
        longest = rng.randrange(max(lens), L + 1)
        plan = dec._plan(lens, decodes, longest)
        if not plan:
            continue
        planned += 1
        assert all(p.shape in dec.graphs and p.shape.span >= longest for p in plan)
        assert (plan[0].first, plan[0].row, plan[-1].end, plan[-1].row_end) == (
            0, 0, len(lens), sum(lens))
        for a, b in itertools.pairwise(plan):
            assert (a.end, a.row_end) == (b.first, b.row)
        for p in plan:
            assert p.row_end - p.row == sum(lens[p.first : p.end]) <= p.shape.tokens
            assert p.end - p.first <= p.shape.seqs
            assert not p.shape.decode or set(lens[p.first : p.end]) == {1}
        assert len(plan) <= 1 + MAX_TAIL_GRAPHS
    assert planned > 500


def test_short_contexts_replay_the_short_span_and_long_ones_the_full():
    """With the Triton backend's spans a decode graph of a short span exists at every batch
    size whose full-span launch splits; a step replays the shortest span that holds its
    longest context, whether the graph is the whole step or its decode head."""
    dec = planner(backend=SplitSpans(16))
    short = decode_splits.ONE_SPLIT_SPAN
    assert dec.spans[1] == (short, L) and dec.spans[80] == (short, L)
    assert dec._plan([1], 1, short) == (_Part(_Shape(1, 1, True, short), 0, 1, 0, 1),)
    assert dec._plan([1], 1, short + 1) == (_Part(_Shape(1, 1, True, L), 0, 1, 0, 1),)
    assert dec._plan([1] * 70 + [40], 70, 100)[0].shape == _Shape(72, 72, True, short)
    assert dec._plan([1] * 70 + [40], 70, 700)[0].shape == _Shape(72, 72, True, L)
    assert dec.fits([1], 1)
    assert dec._plan([1], 1, L + 1) == ()  # longer than any span: eager
    wide = planner(max_num_seqs=256, backend=SplitSpans(16))
    assert wide.spans[88] == (L,)  # 88 x 3 programs fill the GPU twice: never split
    assert _Shape(88, 88, True, short) not in wide.graphs


def test_the_split_count_is_one_for_a_short_context_and_sized_to_the_gpu_beyond():
    short = decode_splits.ONE_SPLIT_SPAN
    assert decode_splits.decode_num_splits(1, 8, short, 128) == 1
    tiles = -(-(short + 1) // 64)  # the 64-token tiles past the short span
    assert decode_splits.decode_num_splits(1, 8, short + 1, 128) == tiles
    assert decode_splits.decode_num_splits(1, 8, 4096, 128) == 33  # 2 x 132 SMs / 8 heads
    assert decode_splits.decode_num_splits(1, 3, 4096, 64) == decode_splits.MAX_SPLITS
    assert decode_splits.decode_num_splits(40, 8, 4096, 128) == 1
    assert decode_splits.decode_spans(1, 8, 128, 4096) == (short, 4096)
    assert decode_splits.decode_spans(1, 8, 128, short) == (short,)
    assert decode_splits.decode_spans(40, 8, 128, 4096) == (4096,)
