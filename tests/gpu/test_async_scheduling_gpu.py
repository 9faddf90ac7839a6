"""On CUDA (Triton kernels, CUDA graphs, non-blocking copies), the overlapped loop gives the
plain loop's tokens: continuous arrivals, chunked prefill, preemption, prefix hits, n > 1,
seeded sampling, stop tokens, logprobs; and an abort while a token is in flight."""

from __future__ import annotations

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs CUDA", allow_module_level=True)
pytest.importorskip("triton")

from inference.engine.config import EngineConfig
from inference.engine.engine import LLMEngine
from tests.unit.engine_driver import greedy, run
from tests.unit.test_async_scheduling import _workload


def gpu_engine(**kw) -> LLMEngine:
    opts = dict(device="cuda", dtype="float32", max_model_len=512, num_kv_blocks=400,
                max_num_seqs=8, max_num_batched_tokens=64, seed=3, block_size=16)
    opts.update(kw)
    return LLMEngine.from_model("dummy:smollm2-135m", EngineConfig(**opts))


@pytest.mark.parametrize("overrides", [{}, {"num_kv_blocks": 6}, {"enforce_eager": True},
                                       {"cuda_graph_max_tokens": 0}],
                         ids=["graphs", "preemption", "eager", "decode-graphs-only"])
def test_overlapped_loop_gives_the_plain_loops_tokens_on_cuda(overrides):
    reqs = _workload(seed=5, n=12)
    got = {}
    for mode in (False, True):
        engine = gpu_engine(async_scheduling=mode, **overrides)
        got[mode] = run(engine, reqs, check=lambda e: e.kv.check_invariants())
        assert engine.stats().free_blocks == engine.stats().num_blocks
        if "num_kv_blocks" in overrides:
            assert engine.stats().preemptions > 0
    assert got[True] == got[False]


def test_abort_with_a_token_in_flight_on_cuda():
    engine = gpu_engine()
    engine.add_request("a", list(range(20, 40)), greedy(30))
    engine.add_request("b", list(range(60, 70)), greedy(8))
    outs = engine.step() + engine.step()
    engine.abort("a")
    while engine.has_unfinished():
        outs += engine.step()
    b = [t for o in outs if o.request_id == "b" for t in o.token_ids]
    plain = run(gpu_engine(async_scheduling=False), [(0, list(range(60, 70)), greedy(8))])
    assert b == plain["r0"][0]
    assert engine.stats().free_blocks == engine.stats().num_blocks


@pytest.mark.parametrize(("mixed", "held"), [(64, False), (0, True)])
def test_a_prompt_step_is_held_back_only_when_it_runs_eagerly(mixed, held):
    """With a step in flight, a new prompt's step that a mixed graph fits is launched at
    once; one that would run eagerly waits for the next call (engine.py)."""
    engine = gpu_engine(cuda_graph_max_tokens=mixed)
    engine.add_request("a", list(range(20, 40)), greedy(30))
    engine.step()
    engine.step()  # "a" decodes, a step in flight
    engine.add_request("b", list(range(60, 75)), greedy(4))
    engine.step()
    assert (engine._held is not None) == held
    ran = {s.request_id for s in engine.last_batch.seqs}
    assert ran == (set() if held else {"a", "b"})

