"""The engine process's loop: it reports where the engine runs and in what dtype; a step that
raises fails the step's requests, not the process (at TP=1), and an unknown engine setting is
refused when the engine is built."""

from __future__ import annotations

import pytest

from inference.engine.cpu_features import this_cpu_bf16_flag
from inference.engine_loop import EngineLoop, ready_message

from .engine_driver import greedy, tiny_engine


def test_ready_says_the_device_the_dtype_chosen_and_why() -> None:
    """What the worker's start-up line prints (worker.py)."""
    ready = ready_message(tiny_engine(dtype="auto"))
    assert ready.device == "cpu"
    flag = this_cpu_bf16_flag()
    if flag is None:
        assert (ready.dtype, ready.dtype_reason) == (
            "float32", "the CPU has no native bfloat16 dot products")
    else:
        assert (ready.dtype, ready.dtype_reason) == ("bfloat16", f"the CPU has {flag}")


def test_a_failing_step_aborts_every_request_and_reports_crashed() -> None:
    engine = tiny_engine()
    engine.add_request("a", list(range(10, 20)), greedy(8))
    engine.add_request("b", list(range(30, 35)), greedy(8))

    def broken() -> list:
        raise RuntimeError("kernel fault")

    engine.step = broken  # type: ignore[method-assign]
    step = EngineLoop(engine, None, None)._step()  # type: ignore[arg-type]
    assert step.crashed == "engine failed: kernel fault"
    assert not step.outputs
    del engine.step  # the real step again: it drains the aborts, and nothing is left
    aborted = {o.request_id: o.finish_reason for o in engine.step()}
    assert aborted == {"a": "abort", "b": "abort"}
    assert not engine.has_unfinished()
    assert engine.stats().free_blocks == engine.stats().num_blocks


def test_an_unknown_pooling_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="pooling: unknown 'cls'"):
        tiny_engine(pooling="cls")


def test_a_step_reports_a_row_per_prefill_and_none_per_decode() -> None:
    """`EngineStep.prefills` holds a row for each sequence computing its prompt, none for a
    decode; `batch_size` and `batch_tokens` count every sequence."""
    from inference.engine_protocol import AddRequest

    loop = EngineLoop(tiny_engine(), None, None)  # type: ignore[arg-type]
    loop._add(AddRequest("a", list(range(10, 20)), greedy(3)))
    loop._add(AddRequest("b", list(range(30, 36)), greedy(3)))
    first = loop._step()
    assert (first.batch_size, first.batch_tokens) == (2, 16)
    assert first.prefills == [("a", 10), ("b", 6)]
    steps = [first]
    while loop.engine.has_unfinished():
        steps.append(loop._step())
    decoding = [s for s in steps[1:] if s.batch_size]
    assert decoding and all(s.prefills == [] for s in decoding)
    assert all(s.batch_tokens == s.batch_size == 2 for s in decoding)


def test_prefill_rows_match_their_definition_through_chunks_hits_and_preemption() -> None:
    """Each step's `prefills` are exactly its sequences whose computed tokens before the step
    fell short of their prompt, in batch order: with a small token budget (prompts chunked,
    some last chunks one token long beside decodes), shared prefixes (a cache hit leaves a
    short remainder) and a pool small enough to preempt (a recompute is a prefill again)."""
    from inference.engine_protocol import AddRequest

    from .engine_driver import arrivals

    engine = tiny_engine(max_num_batched_tokens=7, num_kv_blocks=16)
    loop = EngineLoop(engine, None, None)  # type: ignore[arg-type]
    pending = [(arrives, AddRequest(f"r{i}", prompt, greedy(12)))
               for i, (arrives, prompt) in enumerate(arrivals(5, 14))]
    seen_one_token_prompt_row = seen_mixed = False
    step_no = 0
    while pending or loop.engine.has_unfinished():
        for cmd in [c for arrives, c in pending if arrives <= step_no]:
            loop._add(cmd)
        pending = [p for p in pending if p[0] > step_no]
        step = loop._step()
        batch = loop.engine.last_batch
        expected = [(s.request_id, n) for s, n in zip(batch.seqs, batch.num_tokens, strict=True)
                    if s.num_computed_tokens - n < s.num_prompt_tokens]
        assert step.prefills == expected
        seen_one_token_prompt_row |= any(n == 1 for _, n in expected)
        seen_mixed |= 0 < len(expected) < len(batch)
        step_no += 1
    assert seen_one_token_prompt_row and seen_mixed
    assert engine.scheduler.num_preemptions > 0 and engine.kv.prefix_hit_tokens > 0
