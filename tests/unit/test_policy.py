"""Routing policy, KV index, circuit breaker and result-cache keys, without a mesh."""

from __future__ import annotations

import dataclasses
import time
from types import SimpleNamespace

import pytest

from cache.key import cache_key, cacheable
from gateway.openai_request import parse_chat
from kvmesh.block_hash import hash_prefix_blocks
from kvmesh.wire import Heartbeat, KVEvent, SamplingFields
from kvmesh.worker_registry import WorkerView
from router import kv_index
from router.health import Breakers, backoff
from router.kv_index import EXPECT_S, KVIndex
from router.policy import Candidate, Policy, PolicyParams, home_worker, is_overloaded

PROMPT = list(range(1000, 1000 + 16 * 8 + 5))  # 8 full blocks and a partial one
KEYS = hash_prefix_blocks(PROMPT, 16)


def view(wid: str, running: int = 0, waiting: int = 0, kv_usage: float = 0.1) -> WorkerView:
    return WorkerView(Heartbeat(wid, "m", running, waiting, kv_usage, 100, 90), time.monotonic())


def cands(index: KVIndex, views: list[WorkerView], p: PolicyParams) -> list[Candidate]:
    return [
        Candidate(v, index.overlap(v.beat.worker_id, KEYS), len(KEYS), is_overloaded(v, p))
        for v in views
    ]


def ids(ranked: list[Candidate]) -> list[str]:
    return [c.worker_id for c in ranked]


def test_kv_policy_prefers_the_worker_holding_the_prefix() -> None:
    index = KVIndex()
    index.apply(KVEvent("b", KEYS[:6], [], seq=1))
    p = PolicyParams()
    assert ids(Policy("kv", p).rank(cands(index, [view("a"), view("b")], p), "")) == ["b", "a"]


def test_kv_policy_weighs_load_against_overlap() -> None:
    index = KVIndex()
    index.apply(KVEvent("b", KEYS[:2], [], seq=1))  # saves 2 blocks; 1 queued costs 4
    p = PolicyParams(kv_load_weight=4.0)
    ranked = Policy("kv", p).rank(cands(index, [view("a"), view("b", running=1)], p), "")
    assert ids(ranked) == ["a", "b"]


def test_overloaded_holder_is_passed_over() -> None:
    index = KVIndex()
    index.apply(KVEvent("b", KEYS, [], seq=1))
    p = PolicyParams(overload_queue=4)
    views = [view("a", running=3), view("b", running=2, waiting=2)]
    assert ids(Policy("kv", p).rank(cands(index, views, p), "")) == ["a", "b"]
    full_kv = [view("a", running=3), view("b", kv_usage=0.99)]
    assert ids(Policy("kv", p).rank(cands(index, full_kv, p), "")) == ["a", "b"]


def test_session_goes_home_when_caches_are_equal() -> None:
    p = PolicyParams()
    views = [view("a"), view("b"), view("c")]
    for session in ("alice", "bob", "carol"):
        home = home_worker(session, ["a", "b", "c"])
        assert ids(Policy("kv", p).rank(cands(KVIndex(), views, p), session))[0] == home


def test_round_robin_cycles_and_least_loaded_picks_idle() -> None:
    p = PolicyParams()
    rr = Policy("round-robin", p)
    views = [view("a"), view("b")]
    firsts = [ids(rr.rank(cands(KVIndex(), views, p), ""))[0] for _ in range(4)]
    assert firsts == ["a", "b", "a", "b"]
    ll = Policy("least-loaded", p)
    assert ids(ll.rank(cands(KVIndex(), [view("a", 3), view("b", 1)], p), ""))[0] == "b"


def test_kv_index_evicts_replaces_and_detects_lost_events() -> None:
    index = KVIndex()
    assert index.needs_resync("a")
    index.apply(KVEvent("a", KEYS[:4], [], full=True, seq=1))
    assert not index.needs_resync("a") and index.overlap("a", KEYS) == 4
    index.apply(KVEvent("a", [], [KEYS[1]], seq=2))
    assert index.overlap("a", KEYS) == 1  # the chain breaks at the evicted block
    index.apply(KVEvent("a", KEYS[4:6], [], seq=4))  # seq 3 was lost
    assert index.needs_resync("a")
    index.apply(KVEvent("a", KEYS, [], full=True, seq=5))
    assert not index.needs_resync("a") and index.overlap("a", KEYS) == len(KEYS)


def test_a_prompt_just_routed_counts_as_held_until_events_confirm_or_time_runs_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The repeat of a prompt goes where the first went even before that worker's KV event
    (which trails the first token) reaches the router; the guess lapses after EXPECT_S."""
    now = [100.0]
    monkeypatch.setattr(kv_index, "time", SimpleNamespace(monotonic=lambda: now[0]))
    index = KVIndex()
    for wid in ("a", "b"):
        index.apply(KVEvent(wid, [], [], full=True, seq=1))
    index.expect("b", KEYS)
    p = PolicyParams()
    views = [view("a"), dataclasses.replace(view("b"), pending=1)]  # b has the first one
    assert index.overlap("b", KEYS) == len(KEYS) and index.overlap("a", KEYS) == 0
    assert ids(Policy("kv", p).rank(cands(index, views, p), "")) == ["b", "a"]
    index.apply(KVEvent("b", KEYS[:5], [KEYS[2]], seq=2))  # stored 5, then evicted one
    assert index.overlap("b", KEYS) == 2
    index.expect("b", KEYS[:2])  # nothing to expect: it holds them
    assert index.overlap("b", KEYS) == 2
    index.expect("a", KEYS)
    now[0] += EXPECT_S  # the request never reached a's prefill: the guess lapses
    assert index.overlap("a", KEYS) == 0
    index.expect("a", KEYS[:1])  # sweeps the lapsed entries
    assert index.overlap("a", KEYS) == 1 and len(index._workers["a"].expected) == 1


def test_circuit_opens_after_failures_and_half_opens_after_cooldown() -> None:
    b = Breakers(failures=2, cooldown=0.05)
    b.failure("w")
    assert b.allows("w")
    b.failure("w")
    assert not b.allows("w") and b.state("w") == "open"
    time.sleep(0.06)
    assert b.allows("w") and b.state("w") == "half-open"
    b.attempt("w")
    assert not b.allows("w")  # one trial at a time
    b.success("w")
    assert b.state("w") == "closed"
    assert all(0 < backoff(i, 0.05) <= 2.0 for i in range(1, 10))


def test_cache_key_covers_tenant_revision_and_sampling() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    req = parse_chat(body)
    assert cacheable(req)
    base = cache_key(req, "t1", "r1")
    assert cache_key(req, "t2", "r1") != base
    assert cache_key(req, "t1", "r2") != base
    assert cache_key(parse_chat({**body, "max_tokens": 5}), "t1", "r1") != base
    assert cache_key(parse_chat({**body, "stream": True}), "t1", "r1") == base
    assert not cacheable(parse_chat({**body, "temperature": 0.5}))
    assert cacheable(parse_chat({**body, "temperature": 0.5, "seed": 3}))


def test_every_sampling_field_but_priority_and_salt_changes_the_cache_key() -> None:
    req = parse_chat({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    base = cache_key(req, "t", "r")
    changed = {
        "max_tokens": 7,
        "temperature": 0.5,
        "top_p": 0.5,
        "top_k": 3,
        "min_p": 0.1,
        "seed": 1,
        "n": 2,
        "stop": ["x"],
        "stop_token_ids": [9],
        "ignore_eos": True,
        "logprobs": 2,
        "priority": 5,
        "grammar_kind": "regex",
        "grammar": "a+",
        "cache_salt": "tenant:x",
        "echo": True,
        "prompt_logprobs": 1,
        "logit_bias": {5: 1.0},
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "repetition_penalty": 1.1,
        "min_tokens": 3,
        "include_stop_str_in_output": True,
        "skip_special_tokens": False,
        "allowed_token_ids": [4, 5],
    }
    assert set(changed) == {f.name for f in dataclasses.fields(SamplingFields)}
    for name, value in changed.items():
        key = cache_key(dataclasses.replace(req, **{name: value}), "t", "r")
        assert (key == base) == (name in ("priority", "cache_salt")), name
