"""The overlapped loop (`async_scheduling`) gives exactly what the plain loop gives.

With async scheduling, step N+1 is scheduled and launched before step N's tokens are read:
placeholders stand for the tokens in flight (inflight.py). These tests run one workload through
both loops and compare every choice's tokens, under continuous arrivals, chunked prefill,
preemption by recompute, prefix-cache hits, n > 1, seeded sampling, penalties (their counts
are kept on the device), stop tokens, logprobs and aborts, checking the KV cache's invariants
after every step. Each test runs twice: once as on the CPU, where a step's tokens are back
before the next launch (the engine receives them first), and once with them still in flight
at every launch, as on a GPU that is the slower side (the next step reads them from the device
through placeholders).
"""

from __future__ import annotations

import pytest

from inference.engine.engine import LLMEngine
from inference.engine.inflight import InFlight
from inference.engine.sampling_params import SamplingParams

from .engine_driver import arrivals, greedy, run, tiny_engine


@pytest.fixture(autouse=True, params=["tokens-back", "tokens-in-flight"])
def _tokens_at_launch(request, monkeypatch) -> None:
    if request.param == "tokens-in-flight":
        monkeypatch.setattr(InFlight, "ready", lambda self: False)


def _workload(seed: int, n: int = 10) -> list[tuple[int, list[int], SamplingParams]]:
    reqs = []
    for i, (at, prompt) in enumerate(arrivals(seed, n)):
        kind = i % 5
        if kind == 0:  # penalised by the tokens before it: one may still be in flight
            params = greedy(4 + i, frequency_penalty=0.7, repetition_penalty=1.2)
        elif kind == 1:  # seeded sampling: its draws are its own, whatever else runs
            params = SamplingParams(max_tokens=12, temperature=1.0, seed=i, ignore_eos=True)
        elif kind == 2:  # n > 1 forks after the prompt
            params = SamplingParams(max_tokens=9, temperature=1.0, seed=i, n=3,
                                    ignore_eos=True, presence_penalty=0.5)
        elif kind == 3:  # ends early on a stop token the model is likely to emit, from the
            # min_tokens-th on (counted with the token in flight)
            params = greedy(40, stop_token_ids=list(range(3, 512, 3)), min_tokens=i % 4)
        else:
            params = greedy(10, logprobs=3)
        reqs.append((at, prompt, params))
    return reqs


def overlapped(**overrides):
    """An engine with the overlapped loop on (on the CPU it is off unless asked for)."""
    return tiny_engine(async_scheduling=True, **overrides)


def _both(reqs, **overrides):
    """Run `reqs` through the plain and the overlapped loop; their outputs and engines."""
    out = {}
    for mode in (False, True):
        engine = tiny_engine(async_scheduling=mode, **overrides)
        out[mode] = (run(engine, reqs, check=lambda e: e.kv.check_invariants()), engine)
    return out


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"max_num_batched_tokens": 7},  # chunked prefill
        {"num_kv_blocks": 17},  # preemption by recompute
        {"max_num_seqs": 2},
        {"enable_prefix_caching": False},
    ],
    ids=["continuous", "chunked-prefill", "preemption", "few-seqs", "no-prefix-cache"],
)
def test_overlapped_loop_gives_the_plain_loops_tokens(overrides):
    reqs = _workload(seed=3)
    both = _both(reqs, **overrides)
    (plain, _), (overlapped, engine) = both[False], both[True]
    assert overlapped == plain
    assert any(len(v) < 40 for v in plain["r3"].values()), "a stop token ended r3 early"
    if "num_kv_blocks" in overrides:
        assert engine.stats().preemptions > 0, "the tiny pool should have forced preemption"
    assert engine.stats().free_blocks == engine.stats().num_blocks
    assert not engine.has_unfinished()


def test_prefix_hits_under_the_overlapped_loop_match_a_cold_run():
    prefix = list(range(10, 50))  # 10 full blocks of 4
    engine = overlapped()
    run(engine, [(0, [*prefix, 7, 8], greedy())])
    before = engine.stats().prefix_hit_tokens
    warm = run(engine, [(0, [*prefix, 9], greedy())])
    assert engine.stats().prefix_hit_tokens - before == 40
    cold = run(tiny_engine(enable_prefix_caching=False, async_scheduling=False),
               [(0, [*prefix, 9], greedy())])
    assert warm == cold


def test_generated_blocks_are_keyed_with_real_tokens_not_placeholders():
    """A block filled while its last token was in flight must be keyed from the real token:
    a later request with that exact text hits it, and gets the same answer as a cold run."""
    prompt = list(range(100, 106))
    first = run(overlapped(), [(0, prompt, greedy(14))])["r0"][0]
    engine = overlapped()
    run(engine, [(0, prompt, greedy(14))])
    follow = [*prompt, *first[:10], 77]  # 16 known tokens = 4 full blocks, then one more
    before = engine.stats().prefix_hit_tokens
    warm = run(engine, [(0, follow, greedy(6))])
    assert engine.stats().prefix_hit_tokens - before == 16
    assert warm == run(tiny_engine(enable_prefix_caching=False), [(0, follow, greedy(6))])


def test_a_request_at_its_length_limit_gets_no_extra_step():
    reqs = [(0, list(range(20, 31)), greedy(7)), (2, list(range(40, 45)), greedy(5))]
    computed = {}
    for mode in (False, True):
        engine = tiny_engine(async_scheduling=mode)
        total = []
        run(engine, reqs, check=lambda e, t=total: t.append(e.last_batch.total_tokens))
        computed[mode] = sum(total)
    # prompt + max_tokens - 1 per request: the last sampled token is never fed back
    assert computed[True] == computed[False] == (11 + 7 - 1) + (5 + 5 - 1)


@pytest.mark.parametrize("overrides", [{}, {"max_num_batched_tokens": 7}],
                         ids=["whole-prompts", "chunked-prefill"])
def test_a_call_that_hands_out_first_tokens_draws_the_step_it_launched_on_the_next_call(
        monkeypatch, overrides):
    """A first token leaves before the sampling of the step launched beside it: that call
    leaves the step undrawn (no token in flight, no placeholder) and the next call draws it
    first. Any other call draws the step it launched before returning. The tokens stay the
    plain loop's. Prompt steps launch as when a CUDA graph fits them (on the CPU they run
    eagerly, and the step in flight is handed out before them)."""
    monkeypatch.setattr(LLMEngine, "_launches_eagerly", lambda self, batch: False)
    seen, deferred = set(), []

    def after_each_call(engine, outs) -> None:
        firsts = {(o.request_id, o.index) for o in outs if o.token_ids} - seen
        seen.update(firsts)
        if firsts and engine.last_batch:
            deferred.append(firsts)
            assert engine._unsampled is not None and engine._inflight is None
            assert all(t >= 0 for s in engine.scheduler.running for t in s.token_ids)
        else:
            assert engine._unsampled is None
        engine.kv.check_invariants()

    reqs = _workload(seed=5)
    got = run(overlapped(**overrides), reqs, watch=after_each_call)
    assert got == run(tiny_engine(async_scheduling=False, **overrides), reqs)
    assert len(deferred) >= 5


@pytest.mark.parametrize("steps", [2, 3], ids=["launched-undrawn", "token-in-flight"])
def test_abort_after_a_launch_frees_everything_and_spares_the_rest(steps):
    """Two steps: the prompts' first tokens came out, so "a"'s next step is launched and not
    drawn yet; three: its next token is in flight."""
    engine = overlapped()
    engine.add_request("a", list(range(20, 40)), greedy(30))
    engine.add_request("b", list(range(60, 70)), greedy(8))
    outs = [o for _ in range(steps) for o in engine.step()]
    if steps == 2:
        assert engine._unsampled is not None and engine._inflight is None
        assert "a" in {s.request_id for s in engine._unsampled.sampled}
    else:
        assert engine._unsampled is None and engine._inflight is not None
        assert "a" in {s.request_id for s in engine._inflight.seqs}
    engine.abort("a")
    while engine.has_unfinished():
        outs += engine.step()
        engine.kv.check_invariants()
    a = [o for o in outs if o.request_id == "a"]
    assert a[-1].finish_reason == "abort" and not a[-1].token_ids
    b = [t for o in outs if o.request_id == "b" for t in o.token_ids]
    assert b == run(tiny_engine(async_scheduling=False),
                    [(0, list(range(60, 70)), greedy(8))])["r0"][0]
    assert engine.stats().free_blocks == engine.stats().num_blocks


def test_abort_all_after_a_failed_step_drops_an_undrawn_step_too():
    """After a step fails the engine loop aborts everything (`abort_all`): a launched step
    left undrawn by a first-token call is dropped with the rest, and nothing is left to run."""
    engine = overlapped()
    engine.add_request("a", list(range(20, 40)), greedy(30))
    engine.step()
    engine.step()  # the first token came out: the next step is launched, not drawn
    assert engine._unsampled is not None
    engine.abort_all()
    assert engine._unsampled is None and engine._inflight is None  # its logits untrusted
    assert [o.finish_reason for o in engine.step()] == ["abort"]
    assert not engine.has_unfinished()
    assert engine.stats().free_blocks == engine.stats().num_blocks


def test_tokens_in_flight_are_handed_out_before_a_prompt_is_launched():
    """A prompt's step runs eagerly (a long launch on a GPU host): the step in flight is
    finished and its tokens returned first; the prompt is launched on the next call."""
    engine = overlapped()
    engine.add_request("a", list(range(20, 30)), greedy(20))
    while not any(o.token_ids for o in engine.step()):
        pass  # a is decoding now, with a token in flight
    engine.add_request("b", list(range(40, 50)), greedy(3))
    out = engine.step()
    assert [o.request_id for o in out if o.token_ids] == ["a"]
    assert engine.last_batch.total_tokens == 0  # b's prompt waits for the next call
    assert engine.step() == []  # nothing in flight was left to hand out
    assert engine.last_batch.total_tokens == 10 + 1  # b's prompt and a's next token, together
    first = engine.step()
    assert {o.request_id for o in first if o.token_ids} == {"a", "b"}
