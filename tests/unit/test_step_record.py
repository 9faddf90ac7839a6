"""The engine's step record crosses the pipe whole: its outputs (msgpack inside the pickle,
`EngineStep.__getstate__`) come back equal, every kind of output and field included."""

from __future__ import annotations

import pickle

from inference.engine.embedding import EmbeddingOutput
from inference.engine.engine_stats import EngineStats
from inference.engine.errors import RequestRejected
from inference.engine.grammar import GrammarStats
from inference.engine.outputs import PromptOutput, StepOutput, TokenLogprob, Usage
from inference.engine_pipe import dumps
from inference.engine_protocol import EngineStep


def test_every_kind_of_row_and_field_comes_back_equal() -> None:
    rows = [
        StepOutput("cmpl-f", 0, [], "hi", prompt=PromptOutput([1, 2], "hi", [
            TokenLogprob(2, -1.5, [(2, -1.5)])])),
        StepOutput("cmpl-a", 0, [7], " the"),
        StepOutput("cmpl-b", 2, [8], "", [TokenLogprob(8, -0.5, [(8, -0.5), (3, -1.25)])]),
        StepOutput("cmpl-c", 0, [9], "end\u00e9", None, "length", Usage(5, 3, 2)),
        StepOutput("cmpl-d", 1, [], "", None, "abort"),
        StepOutput("cmpl-e", 0, [0], "\ufffd", [TokenLogprob(0, float("-inf"))], "stop",
                   Usage(4, 1, 0)),
    ]
    refused = RequestRejected("max_tokens", "too long")
    stats = EngineStats(2, 1, 10, 5, 5, 1, 3, 9, 0, GrammarStats(1, 2, 0.5, 1, 40, 0.25, 0.125))
    step = EngineStep(rows, stats, [("cmpl-a", 12)], 123, 0.004, 2, 14,
                      rejected=[("cmpl-x", refused)], crashed="engine failed: x",
                      stored=[2**63 + 5], evicted=[7], snapshot=[2**64 - 1, 3],
                      token_text={8: " the"},
                      embeddings=[EmbeddingOutput("emb-a", 1, b"\x00\x00\x80?", Usage(3, 0))])
    back = pickle.loads(dumps(step))
    assert back.outputs == rows
    assert back.outputs[2].logprobs[0].top == [(8, -0.5), (3, -1.25)]
    assert isinstance(back.outputs[3].usage, Usage)
    assert back.outputs[0].prompt.logprobs[0].top == [(2, -1.5)]
    rest = {k: v for k, v in back.__dict__.items() if k not in ("outputs", "rejected")}
    assert rest == {k: v for k, v in step.__dict__.items() if k not in ("outputs", "rejected")}
    assert [(r, str(e)) for r, e in back.rejected] == [("cmpl-x", "max_tokens: too long")]
    assert isinstance(back.stats.grammar, GrammarStats) and back.prefills == [("cmpl-a", 12)]
    assert back.embeddings[0].floats() == [1.0]
    assert step.outputs is rows  # pickling left the sender's record as it was


def test_a_record_of_no_rows() -> None:
    step = EngineStep([], EngineStats(0, 0, 1, 1, 0, 0, 0, 0, 0))
    assert pickle.loads(dumps(step)).outputs == []
