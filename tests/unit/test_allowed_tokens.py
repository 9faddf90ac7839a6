"""`allowed_token_ids` (inference/engine/allowed_tokens.py): a row draws only its request's
tokens, whatever the model prefers, in both loops and with other rows beside it untouched;
ids outside the vocabulary, an empty list, or one beside a grammar or `min_tokens` are
refused naming the field."""

from __future__ import annotations

import pytest
import torch

from inference.engine.errors import InvalidParameter
from inference.engine.sampler import SampleRow, sample
from inference.engine.sampling_params import SamplingParams

from .engine_driver import drain, tiny_engine

VOCAB = 12


def test_only_the_allowed_logits_stay_and_other_rows_are_untouched() -> None:
    logits = torch.arange(3 * VOCAB, dtype=torch.float32).reshape(3, VOCAB)
    raw = logits.clone()
    rows = [SampleRow(SamplingParams(temperature=0.0, allowed_token_ids=[3, 1, 3]), None),
            SampleRow(SamplingParams(temperature=0.0), None),
            SampleRow(SamplingParams(temperature=0.0, allowed_token_ids=[7], logprobs=2), None)]
    drawn = sample(logits, rows, torch.Generator())
    assert drawn.tokens.tolist() == [3, VOCAB - 1, 7]
    assert torch.equal(logits[1], raw[1])
    for row, kept in ((0, {1, 3}), (2, {7})):
        assert {t for t in range(VOCAB) if logits[row, t] != float("-inf")} == kept
        assert torch.equal(logits[row, sorted(kept)], raw[row, sorted(kept)])
    assert drawn.top_ids[0, 0].item() == 7 and drawn.chosen[0].item() == 0.0  # all its mass
    assert drawn.top_values[0, 1].item() == -9999.0  # a forbidden alternative: OpenAI's floor


@pytest.mark.parametrize("async_scheduling", [False, True])
def test_answers_keep_to_the_allowed_tokens(async_scheduling: bool) -> None:
    allowed = [5, 9]
    requests = {
        "greedy": ([5, 6, 7], SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True,
                                             allowed_token_ids=allowed)),
        "sampled": ([8, 9], SamplingParams(temperature=1.5, seed=2, n=2, max_tokens=12,
                                           ignore_eos=True, allowed_token_ids=allowed)),
        "free": ([5, 6, 7], SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)),
    }
    _, tokens, _ = drain(tiny_engine(async_scheduling=async_scheduling), requests)
    assert set(tokens["greedy"]) <= set(allowed) and len(tokens["greedy"]) == 12
    assert set(tokens["sampled"]) == set(allowed) and len(tokens["sampled"]) == 24
    assert not set(tokens["free"]) <= set(allowed)  # the model alone goes elsewhere


def test_bad_allowed_token_ids_are_refused_naming_them() -> None:
    engine = tiny_engine()
    vocab = engine.limits.vocab_size
    cases = [({"allowed_token_ids": [vocab]}, "allowed_token_ids"),
             ({"allowed_token_ids": []}, "allowed_token_ids"),
             ({"allowed_token_ids": [1], "grammar_kind": "regex", "grammar": "a"},
              "allowed_token_ids"),
             ({"allowed_token_ids": [1], "min_tokens": 1}, "min_tokens")]
    for fields, param in cases:
        with pytest.raises(InvalidParameter) as err:
            engine.add_request("r", [1, 2], SamplingParams(max_tokens=4, **fields))
        assert err.value.param == param, fields
