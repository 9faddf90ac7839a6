"""`logit_bias` in the sampler: added to the biased rows only, for a whole batch at once; with
the real SmolLM2 model a +100 bias forces a token and -100 bans the greedy one."""

from __future__ import annotations

import pytest
import torch

from inference import LLM, SamplingParams
from inference.engine.errors import InvalidParameter
from inference.engine.logit_bias import apply_logit_bias
from inference.engine.sampler import SampleRow, sample

PROMPT = "The capital of France is"


def test_bias_lands_on_its_rows_and_tokens_only():
    logits = torch.zeros(3, 10)
    params = [SamplingParams(logit_bias={2: 5.0, 7: -3.0}), SamplingParams(),
              SamplingParams(logit_bias={2: 1.5})]
    apply_logit_bias(logits, params)
    want = torch.zeros(3, 10)
    want[0, 2], want[0, 7], want[2, 2] = 5.0, -3.0, 1.5
    assert torch.equal(logits, want)


def test_greedy_and_sampled_rows_follow_their_biases_in_one_batch():
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    rows = [SampleRow(SamplingParams(temperature=0.0, logit_bias={13: 100.0}), None),
            SampleRow(SamplingParams(temperature=1.0, logit_bias={21: 100.0}), None),
            SampleRow(SamplingParams(temperature=0.0), None),
            SampleRow(SamplingParams(temperature=0.0, logit_bias={3: 100.0}), None)]
    plain = logits[2].argmax().item()
    drawn = sample(logits, rows, torch.Generator().manual_seed(1))
    assert drawn.tokens.tolist() == [13, 21, plain, 3]


def test_bias_values_outside_the_range_are_refused():
    with pytest.raises(InvalidParameter) as err:
        SamplingParams(logit_bias={5: 100.5})
    assert err.value.param == "logit_bias"


@pytest.fixture(scope="module")
def llm(smollm_gguf) -> LLM:
    return LLM(str(smollm_gguf))


def _greedy(llm: LLM, bias: dict[int, float], n: int = 4) -> list[int]:
    params = SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True, logit_bias=bias)
    return list(llm.generate([PROMPT], params)[0].outputs[0].token_ids)


@pytest.mark.slow
def test_plus_100_forces_a_token_on_the_real_model(llm: LLM) -> None:
    forced = llm.tokenizer.encode(" banana")[0]
    assert forced not in _greedy(llm, {})
    assert _greedy(llm, {forced: 100.0}) == [forced] * 4


@pytest.mark.slow
def test_minus_100_bans_the_greedy_token_on_the_real_model(llm: LLM) -> None:
    first = _greedy(llm, {}, 1)[0]
    banned = _greedy(llm, {first: -100.0}, 6)
    assert first not in banned and len(banned) == 6


@pytest.mark.slow
def test_a_token_outside_the_vocabulary_is_refused_by_the_engine(llm: LLM) -> None:
    vocab = llm.engine.model_config.vocab_size
    with pytest.raises(InvalidParameter) as err:
        _greedy(llm, {vocab: 1.0})
    assert err.value.param == "logit_bias" and str(vocab) in str(err.value)
