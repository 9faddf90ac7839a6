"""The engine process's loop: a step that raises fails the step's requests, not the process
(at TP=1), and an unknown engine setting is refused when the engine is built."""

from __future__ import annotations

import pytest

from inference.engine_loop import EngineLoop

from .engine_driver import greedy, tiny_engine


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
