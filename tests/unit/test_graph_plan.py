"""How a step is planned over the captured CUDA graphs (cuda_graphs.py), on the CPU: which
graphs replay which sequences and rows. The replays themselves are checked against the eager
engine on a GPU (tests/gpu/test_engine_gpu.py)."""

from __future__ import annotations

import itertools
import random

import torch

from inference.engine.cuda_graphs import MAX_TAIL_GRAPHS, CudaGraphDecoder, _Part, _Shape


def planner(max_num_seqs: int = 80, max_mixed_tokens: int = 128) -> CudaGraphDecoder:
    """A decoder whose graph set is known but not captured (no GPU here): the planner reads
    only which shapes exist."""
    dec = CudaGraphDecoder(None, None, torch.zeros(1), max_num_seqs, max_model_len=1024,
                           block_size=16, max_mixed_tokens=max_mixed_tokens)
    dec.graphs = dict.fromkeys(dec._shapes())
    return dec


def test_a_step_one_graph_holds_replays_that_graph():
    dec = planner()
    assert dec._plan([1] * 5, 5) == (_Part(_Shape(8, 8, True), 0, 5, 0, 5),)
    assert dec._plan([1, 1, 30, 7], 2) == (_Part(_Shape(64, 64, False), 0, 4, 0, 39),)


def test_many_decodes_and_a_prompt_replay_a_decode_graph_then_a_mixed_graph():
    dec = planner()
    assert dec._plan([1] * 70 + [40], 70) == (
        _Part(_Shape(72, 72, True), 0, 70, 0, 70),
        _Part(_Shape(64, 64, False), 70, 71, 70, 110),
    )


def test_prompts_beyond_the_largest_bucket_are_packed_whole_in_order():
    dec = planner(max_mixed_tokens=512)
    assert dec._plan([1] * 10 + [300, 200, 100], 10) == (
        _Part(_Shape(16, 16, True), 0, 10, 0, 10),
        _Part(_Shape(512, 64, False), 10, 12, 10, 510),
        _Part(_Shape(128, 64, False), 12, 13, 510, 610),
    )
    assert dec._plan([300, 300], 0) == (
        _Part(_Shape(512, 64, False), 0, 1, 0, 300),
        _Part(_Shape(512, 64, False), 1, 2, 300, 600),
    )


def test_a_mixed_graph_takes_at_most_its_sequences():
    dec = planner(max_num_seqs=256)
    parts = dec._plan([2] * 130, 0)
    assert [(p.first, p.end) for p in parts] == [(0, 64), (64, 128), (128, 130)]
    assert [p.shape.tokens for p in parts] == [128, 128, 16]


def test_a_step_no_plan_fits_runs_eagerly():
    dec = planner()
    assert dec._plan([1] * 3 + [129], 3) == ()  # one chunk longer than the largest bucket
    assert dec._plan([100] * (MAX_TAIL_GRAPHS + 1), 0) == ()  # too many graphs
    assert dec._plan([1] * 90, 90) == ()  # more decodes than the largest decode graph
    assert planner(max_mixed_tokens=0)._plan([1, 1, 40], 2) == ()  # decode graphs only
    assert not CudaGraphDecoder(None, None, torch.zeros(1), 8, 1024, 16, 128).fits([1], 1)


def test_every_plan_covers_the_step_once_within_its_graphs():
    dec, rng, planned = planner(max_num_seqs=256, max_mixed_tokens=256), random.Random(5), 0
    for _ in range(2000):
        decodes = rng.choice([0, 1, 7, 64, 100, 200])
        lens = [1] * decodes + [rng.choice([1, 2, 17, 90, 200, 300])
                                for _ in range(rng.randrange(0 if decodes else 1, 12))]
        plan = dec._plan(lens, decodes)
        if not plan:
            continue
        planned += 1
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
