"""Batched generation equals one-at-a-time generation, whatever the scheduler does."""

from __future__ import annotations

import random

import pytest

from inference.engine.sampling_params import SamplingParams

from .engine_driver import arrivals, greedy, run, tiny_engine


def _workload(seed: int, n: int = 8) -> list[tuple[int, list[int], object]]:
    rng = random.Random(seed + 1000)
    return [(at, prompt, greedy(rng.randrange(4, 16))) for at, prompt in arrivals(seed, n)]


def _alone(reqs) -> dict[str, dict[int, list[int]]]:
    out = {}
    for i, (_, prompt, params) in enumerate(reqs):
        out[f"r{i}"] = run(tiny_engine(enable_prefix_caching=False), [(0, prompt, params)])["r0"]
    return out


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"max_num_batched_tokens": 7},  # chunked prefill
        {"num_kv_blocks": 17},  # preemption by recompute; the longest request needs 16
        {"max_num_seqs": 2},
    ],
    ids=["continuous", "chunked-prefill", "preemption", "few-seqs"],
)
def test_batched_greedy_equals_one_at_a_time(overrides):
    reqs = _workload(seed=1)
    engine = tiny_engine(**overrides)
    got = run(engine, reqs, check=lambda e: e.kv.check_invariants())
    assert got == _alone(reqs)
    if "num_kv_blocks" in overrides:
        assert engine.stats().preemptions > 0, "the tiny pool should have forced preemption"
    assert engine.stats().free_blocks == engine.stats().num_blocks


def test_cached_tokens_count_the_first_admissions_hits_not_a_preempted_ones_own_blocks():
    """A sequence preempted and admitted again finds its own recomputed blocks cached: they
    are not prompt-cache hits (`cached_tokens` once counted them, even past `prompt_tokens`).
    Prompts that share nothing have none."""
    rng = random.Random(5)
    reqs = [(i, [rng.randrange(3, 512) for _ in range(16 + i)], greedy(16)) for i in range(4)]
    engine = tiny_engine(num_kv_blocks=17)
    usage = {}
    run(engine, reqs, watch=lambda e, outs: usage.update(
        {o.request_id: o.usage for o in outs if o.usage is not None}))
    assert engine.stats().preemptions > 0
    assert {rid: u.cached_tokens for rid, u in usage.items()} == dict.fromkeys(usage, 0)


@pytest.mark.parametrize("overlap", [False, True], ids=["plain", "overlapped"])
@pytest.mark.parametrize("seqs, tokens", [(2, 64), (6, 4)], ids=["few-seqs", "few-tokens"])
def test_no_step_goes_past_its_sequence_or_token_budget(overlap, seqs, tokens):
    """A request with n > 1 forks its choices into the running set past either budget (more
    sequences than a step holds, more decodes than its tokens): the scheduler's decode path
    keeps both limits, and the answers stay the ones computed alone."""
    rng = random.Random(4)
    reqs = [*_workload(seed=3, n=6),
            *((at, [rng.randrange(3, 512) for _ in range(9)], greedy(10, n=5)) for at in (0, 3))]
    engine = tiny_engine(async_scheduling=overlap, max_num_seqs=seqs,
                         max_num_batched_tokens=tokens)

    def within(e) -> None:
        assert len(e.last_batch) <= seqs
        assert e.last_batch.total_tokens <= tokens

    assert run(engine, reqs, check=within) == _alone(reqs)


def test_shared_prefix_reuses_blocks_and_matches_a_cold_run():
    prefix = list(range(10, 50))  # 40 tokens = 10 full blocks of 4
    engine = tiny_engine()
    first = run(engine, [(0, [*prefix, 7, 8], greedy())])
    before = engine.stats()
    second = run(engine, [(0, [*prefix, 9], greedy())])
    after = engine.stats()
    assert after.prefix_hit_tokens - before.prefix_hit_tokens == 40
    cold = run(tiny_engine(enable_prefix_caching=False), [(0, [*prefix, 9], greedy())])
    assert second == cold
    assert first != second


def test_n_choices_fork_the_prompt_and_greedy_choices_agree():
    engine = tiny_engine()
    got = run(engine, [(0, list(range(3, 17)), greedy(8, n=3))])["r0"]
    assert got[0] == got[1] == got[2]
    assert engine.stats().free_blocks == engine.stats().num_blocks
    engine.kv.check_invariants()


@pytest.mark.parametrize("overlap", [False, True], ids=["plain", "overlapped"])
def test_n_choices_forked_among_other_requests_and_none_left_waiting_for_a_fork(overlap):
    """A request with n > 1 forks beside single-choice requests, arriving in a later step;
    one aborted before its fork, and an echo with `max_tokens` 0 (never forked), leave
    nothing waiting for a fork, so later steps make no pass over their rows for it."""
    engine = tiny_engine(async_scheduling=overlap)
    got: dict[str, dict[int, list[int]]] = {}

    def step() -> None:
        for out in engine.step():
            got.setdefault(out.request_id, {}).setdefault(out.index, []).extend(out.token_ids)
        engine.kv.check_invariants()

    engine.add_request("one", list(range(3, 17)), greedy(8))
    step()
    engine.add_request("three", list(range(3, 17)), greedy(8, n=3))
    engine.add_request("gone", list(range(20, 30)), greedy(8, n=2))
    engine.add_request("echo", list(range(30, 40)),
                       SamplingParams(max_tokens=0, n=2, echo=True))
    engine.abort("gone")
    while engine.has_unfinished():
        step()
    assert got["three"][0] == got["three"][1] == got["three"][2] == got["one"][0]
    assert engine._to_fork == set()
    assert engine.stats().free_blocks == engine.stats().num_blocks


@pytest.mark.parametrize("overlap", [False, True], ids=["plain", "overlapped"])
def test_a_choice_ends_at_the_models_context_when_max_tokens_reaches_past_it(overlap):
    """A choice's length limit is its prompt plus `max_tokens`, at most the model's context:
    forked choices and a short request beside them each end where theirs falls."""
    engine = tiny_engine(async_scheduling=overlap, max_model_len=24)
    engine.add_request("long", list(range(3, 13)), greedy(100, n=2))
    engine.add_request("short", list(range(3, 13)), greedy(5))
    tokens: dict[tuple[str, int], list[int]] = {}
    reasons: dict[tuple[str, int], str] = {}
    for _ in range(100):  # a choice that misses its end would keep the engine busy
        for out in engine.step():
            tokens.setdefault((out.request_id, out.index), []).extend(out.token_ids)
            if out.finish_reason is not None:
                reasons[(out.request_id, out.index)] = out.finish_reason
    assert not engine.has_unfinished()
    assert [len(tokens["long", i]) for i in (0, 1)] == [24 - 10] * 2
    assert len(tokens["short", 0]) == 5
    assert reasons == {("long", 0): "length", ("long", 1): "length", ("short", 0): "length"}


def test_abort_frees_blocks_at_once_and_others_keep_going():
    engine = tiny_engine()
    engine.add_request("a", list(range(3, 40)), greedy(50))
    engine.add_request("b", list(range(5, 20)), greedy(6))
    engine.step()
    engine.step()
    used = engine.stats().used_blocks
    engine.abort("a")
    assert engine.stats().used_blocks < used
    outs = []
    while engine.has_unfinished():
        outs.extend(engine.step())
    assert [o.finish_reason for o in outs if o.request_id == "a"] == ["abort"]
    b = [o for o in outs if o.request_id == "b"]
    assert b[-1].finish_reason == "length" and b[-1].usage.completion_tokens == 6
    assert engine.stats().free_blocks == engine.stats().num_blocks


def test_higher_priority_is_admitted_first_and_preempted_last():
    engine = tiny_engine(num_kv_blocks=14, max_num_seqs=8)
    preempted: list[int] = []
    real_preempt = engine.scheduler._preempt

    def recording_preempt(seq):
        preempted.append(seq.priority)
        real_preempt(seq)

    engine.scheduler._preempt = recording_preempt
    lows = [(0, list(range(3 + i, 15 + i)), greedy(20, priority=0)) for i in range(4)]
    # Both high-priority requests fit the pool together (6 blocks each of 14).
    highs = [(1, list(range(100 + i, 112 + i)), greedy(12, priority=5)) for i in range(2)]
    got = run(engine, lows + highs)
    assert [len(v[0]) for v in got.values()] == [20] * 4 + [12] * 2
    assert preempted and set(preempted) == {0}, "only low-priority sequences are preempted"


def test_waiting_high_priority_requests_are_admitted_before_older_low_ones():
    engine = tiny_engine(max_num_seqs=2)
    admitted: list[str] = []

    def check(e):
        admitted.extend(s.request_id for s in e.scheduler.running if s.request_id not in admitted)

    lows = [(0, list(range(3 + i, 15 + i)), greedy(6, priority=0)) for i in range(4)]
    highs = [(1, list(range(100 + i, 112 + i)), greedy(6, priority=5)) for i in range(2)]
    run(engine, lows + highs, check=check)
    assert admitted == ["r0", "r1", "r4", "r5", "r2", "r3"]


def test_request_larger_than_the_pool_ends_with_length_instead_of_spinning():
    engine = tiny_engine(num_kv_blocks=4)  # 16 tokens of KV
    engine.add_request("big", list(range(3, 13)), greedy(30))
    outs = []
    for _ in range(100):
        outs.extend(engine.step())
        if not engine.has_unfinished():
            break
    assert outs[-1].finish_reason == "length"
    assert not engine.has_unfinished()


@pytest.mark.parametrize("overlap", [False, True], ids=["plain", "overlapped"])
def test_both_queues_stay_in_queue_order_through_preemption_and_forks(overlap):
    """The scheduler keeps `running` and `waiting` sorted by `Sequence.queue_key` as
    sequences enter them (each step walks `running` without sorting it): after every step,
    through mixed priorities, preemption by recompute and `n > 1` forks joining `running`;
    and every choice still gets all its tokens."""
    engine = tiny_engine(num_kv_blocks=17, async_scheduling=overlap)
    rng = random.Random(3)
    reqs = [(at, prompt, greedy(rng.randrange(4, 16), priority=rng.choice([0, 0, 5]),
                                n=rng.choice([1, 1, 2])))
            for at, prompt in arrivals(3, 12)]

    def in_order(e) -> None:
        for queue in (e.scheduler.running, e.scheduler.waiting):
            keys = [s.queue_key for s in queue]
            assert keys == sorted(keys)

    got = run(engine, reqs, check=in_order)
    assert [{i: len(t) for i, t in got[f"r{k}"].items()} for k in range(len(reqs))] == [
        dict.fromkeys(range(p.n), p.max_tokens) for _, _, p in reqs]
    assert engine.scheduler.num_preemptions > 0
    assert any(p.n > 1 for _, _, p in reqs) and len({p.priority for _, _, p in reqs}) == 2
