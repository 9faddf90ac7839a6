"""The background mask fill (grammar_fill.py) on the real SmolLM2: it changes no token, it
really runs beside the output handling, and sequences that end meanwhile lose their rows."""

from __future__ import annotations

import json
import threading
import time

import pytest
import torch

from inference.engine.inflight import InFlight
from inference.engine.sampling_params import SamplingParams

from .test_grammar import PERSON, _Constrained, _prompt


@pytest.fixture(scope="module")
def engines(smollm_gguf):
    """The plain loop (False) and the overlapped loop (True), on the CPU."""
    from inference.engine.config import EngineConfig
    from inference.engine.engine import LLMEngine

    torch.set_num_threads(1)
    return {mode: LLMEngine.from_model(str(smollm_gguf), EngineConfig(
        device="cpu", num_kv_blocks=160, max_model_len=512, enable_prefix_caching=False,
        async_scheduling=mode)) for mode in (False, True)}


def _schema(**kw) -> SamplingParams:
    return SamplingParams(grammar_kind="json_schema", grammar=json.dumps(PERSON),
                          **{"max_tokens": 60, "temperature": 1.0, **kw})


def _workload(engine) -> dict[str, tuple[list[int], SamplingParams]]:
    ids = _prompt(engine, "Describe a person as JSON.")
    return {
        "seeded": (ids, _schema(seed=1)),
        "greedy": (ids, _schema(temperature=0.0)),
        "forked": (ids, _schema(seed=2, n=3, max_tokens=40)),
        "stopped": (ids, _schema(seed=3, stop=[","])),  # ends on its first comma, mid-batch
        "short": (ids, _schema(seed=4, max_tokens=5)),
        "regex": (ids, SamplingParams(max_tokens=20, temperature=1.0, seed=5,
                                      grammar_kind="regex", grammar=r"[a-z]{3,12}\.")),
        "free": (ids, SamplingParams(max_tokens=30, temperature=0.8, seed=6)),
        "free-greedy": (ids, SamplingParams(max_tokens=20, temperature=0.0)),
    }


def _drain(engine, requests, on_step=None):
    """Tokens and finish reason of every choice, keyed by (request id, index)."""
    for rid, (ids, params) in requests.items():
        engine.add_request(rid, ids, params)
    tokens: dict[tuple[str, int], list[int]] = {}
    reasons: dict[tuple[str, int], str] = {}
    while engine.has_unfinished():
        for out in engine.step():
            key = (out.request_id, out.index)
            tokens.setdefault(key, []).extend(out.token_ids)
            if out.finish_reason:
                reasons[key] = out.finish_reason
        if on_step is not None:
            on_step(engine)
    return tokens, reasons


def _serial(engine, monkeypatch) -> None:
    """The path before the background fill: nothing is foreseen, every row filled on the spot."""
    monkeypatch.setattr(engine.fill, "start", lambda seqs: None)


@pytest.mark.parametrize("overlapped, in_flight", [(False, False), (True, False), (True, True)],
                         ids=["plain", "overlapped", "overlapped-tokens-in-flight"])
def test_the_background_fill_changes_no_token(engines, overlapped, in_flight,
                                              monkeypatch) -> None:
    """Overlapped, the tokens are back before the next launch on the CPU, so the fill starts
    before it; `in_flight` makes them late at every launch, as on a GPU-bound step, so the
    fill starts after the launch."""
    if in_flight:
        monkeypatch.setattr(InFlight, "ready", lambda self: False)
    engine = engines[overlapped]
    stats = engine.grammars.stats
    waited = stats.mask_wait_seconds
    background = _drain(engine, _workload(engine))
    assert stats.mask_wait_seconds - waited > 0
    with monkeypatch.context() as m:
        _serial(engine, m)
        serial = _drain(engine, _workload(engine))
    assert background == serial
    tokens, reasons = background
    assert len(tokens) == 10 and reasons[("forked", 2)] in ("stop", "length")
    assert reasons[("stopped", 0)] == "stop" and len(tokens[("stopped", 0)]) < 15
    assert reasons[("short", 0)] == "length" and len(tokens[("short", 0)]) == 5


def test_the_fill_runs_beside_the_output_handling(engines, monkeypatch) -> None:
    """A rendezvous: the background fill waits for the output handling to begin and the output
    handling waits for the fill to begin. Were they serial, one would wait in vain."""
    engine = engines[True]
    fill, emit = engine.grammars.fill, engine._emit
    filling, handling = threading.Event(), threading.Event()
    met: list[bool] = []

    def fill_beside(seqs, out=None):
        if threading.current_thread() is not threading.main_thread() and not filling.is_set():
            filling.set()
            met.append(handling.wait(10))
        return fill(seqs, out)

    def emit_beside(got):
        if not handling.is_set():
            met.append(filling.wait(10))
            handling.set()
        return emit(got)

    monkeypatch.setattr(engine.grammars, "fill", fill_beside)
    monkeypatch.setattr(engine, "_emit", emit_beside)
    _drain(engine, {"c": (_prompt(engine, "A person as JSON."), _schema(seed=7, max_tokens=8))})
    assert met == [True, True]


def test_free_steps_hand_nothing_to_the_fill(engines) -> None:
    engine = engines[True]
    before = engine.grammars.stats.mask_seconds
    jobs = []
    _drain(engine, {"f": (_prompt(engine, "Hello"), SamplingParams(max_tokens=6, seed=1,
                                                                      temperature=1.0))},
           on_step=lambda e: jobs.append(e.fill._job))
    assert jobs == [None] * len(jobs) and engine.grammars.stats.mask_seconds == before


def test_an_abort_while_a_mask_fills_drops_its_row(engines, monkeypatch) -> None:
    """The plain loop leaves the next step's fill running when `step` returns: abort one
    constrained request while its row is being filled; the others get their own tokens."""
    engine = engines[False]
    ids = _prompt(engine, "Describe a person as JSON.")
    requests = {"gone": (ids, _schema(seed=8)), "kept": (ids, _schema(seed=9)),
                "free": (ids, SamplingParams(max_tokens=25, temperature=0.8, seed=10))}
    alone = _drain(engine, {k: v for k, v in requests.items() if k != "gone"})[0]
    fill, gate, blocked = engine.grammars.fill, threading.Event(), []

    def gated_fill(seqs, out=None):
        if threading.current_thread() is not threading.main_thread() and not gate.is_set():
            blocked.append(True)
            gate.wait(10)
        return fill(seqs, out)

    monkeypatch.setattr(engine.grammars, "fill", gated_fill)
    for rid, (ids_, params) in requests.items():
        engine.add_request(rid, ids_, params)
    outs = []
    while not blocked or engine.fill._job is None:  # the prompt's step, then a held fill
        outs += engine.step()
    assert not engine.fill._job.bits.done()
    engine.abort("gone")
    gate.set()
    while engine.has_unfinished():
        outs += engine.step()
    gone = [o for o in outs if o.request_id == "gone"]
    assert gone[-1].finish_reason == "abort"
    got = {(k, 0): [t for o in outs if o.request_id == k for t in o.token_ids]
           for k in ("kept", "free")}
    assert got == alone
    assert engine.stats().free_blocks == engine.stats().num_blocks


def test_a_worker_that_cannot_begin_costs_a_wait_not_a_hang(engines, monkeypatch) -> None:
    """The fill's worker is busy: `start` stops waiting for it after `START_WAIT_S`, and
    `masks` still gives every row, as a fill on the spot would."""
    import inference.engine.grammar_fill as grammar_fill
    from inference.engine.grammar_fill import MaskFill
    from inference.engine.sequence import Sequence, SequenceStatus

    monkeypatch.setattr(grammar_fill, "START_WAIT_S", 0.05)
    grammars = engines[True].grammars
    seqs = []
    for i in range(4):
        seq = Sequence(i, f"r{i}", 0, [1, 2, 3], 3, _schema(seed=i), 0.0,
                       status=SequenceStatus.RUNNING)
        seq.matcher, seq.grammar_lane = grammars.new_matcher(seq.params)
        seqs.append(seq)
    fill, busy = MaskFill(grammars), threading.Event()
    fill.start(seqs[:1])  # starts the worker
    fill.masks(seqs[:1])
    fill._worker.submit(busy.wait, 10)
    began = time.perf_counter()
    fill.start(seqs)
    assert 0.05 <= time.perf_counter() - began < 5
    assert not fill._job.bits.done()
    busy.set()
    assert torch.equal(fill.masks(seqs).bits, grammars.fill(seqs))


def test_rows_keep_their_place_when_filled_lane_by_lane(engines) -> None:
    from inference.engine.grammar import Grammars

    base = engines[True].grammars
    grammars = Grammars(engines[True].tokenizer, base.vocab_size, frozenset({2}), lanes=2)
    yes = SamplingParams(max_tokens=4, grammar_kind="choice", grammar='["yes"]')
    no = SamplingParams(max_tokens=4, grammar_kind="choice", grammar='["no"]')
    seqs = [_Constrained(*grammars.new_matcher(p)) for p in (yes, no, yes, no, yes)]
    assert [s.grammar_lane for s in seqs] == [0, 0, 1, 1, 0]  # round robin per grammar
    bits = grammars.fill(seqs)
    alone = [grammars.fill([s]) for s in seqs]
    assert all(torch.equal(bits[j], alone[j][0]) for j in range(5))
    assert not torch.equal(bits[0], bits[1])
