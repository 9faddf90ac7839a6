"""Prompt logprobs in the engine on the real GGUF: equal to transformers' log-softmax at every
prompt position, whether the prompt is prefilled whole or in chunks, alone or batched with
others, and after the prompt's blocks were cached by another request (which a request scoring
its prompt does not reuse). `echo` with `max_tokens` 0 scores and ends every choice."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from inference import LLM, SamplingParams
from inference.engine.errors import InvalidParameter

pytestmark = pytest.mark.slow

TOL = 1e-4
TEXTS = ["The quick brown fox jumps over the lazy dog. Paris is the capital of France, and",
         "def add(a, b):\n    return a + b\n\nprint(add(2, 3))"]


@pytest.fixture(scope="module")
def hf(smollm_gguf):
    return AutoModelForCausalLM.from_pretrained(
        str(smollm_gguf.parent), gguf_file=smollm_gguf.name, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def llm(smollm_gguf) -> LLM:
    # Every prompt here is chunked; float32 like the reference, so TOL holds.
    return LLM(str(smollm_gguf), dtype="float32", max_num_batched_tokens=16)


@torch.no_grad()
def _reference(hf, ids: list[int], k: int) -> tuple[list[float], torch.Tensor]:
    lp = hf(torch.tensor([ids])).logits[0].float().log_softmax(-1)[:-1]
    chosen = lp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
    return chosen.tolist(), lp.topk(k, dim=-1).values


def _check(out, hf, ids: list[int], k: int) -> None:
    assert out.prompt is not None and out.prompt.token_ids == ids
    lps = out.prompt.logprobs
    assert [lp.token_id for lp in lps] == ids[1:]
    want, top = _reference(hf, ids, k)
    assert max(abs(lp.logprob - w) for lp, w in zip(lps, want, strict=True)) <= TOL
    ours = torch.tensor([[v for _, v in lp.top] for lp in lps])  # values: ties may swap ids
    assert (ours - top).abs().max().item() <= TOL


def test_chunked_and_batched_prompt_logprobs_equal_transformers(llm, hf):
    ids = [llm.tokenizer.encode(t) for t in TEXTS]
    assert all(len(i) > 16 for i in ids)
    params = SamplingParams(max_tokens=2, temperature=0, echo=True, prompt_logprobs=3)
    outs = llm.generate(ids, params)  # both in one engine, sharing steps
    for out, prompt in zip(outs, ids, strict=True):
        _check(out, hf, prompt, 3)
        assert out.prompt.text == llm.tokenizer.decode(prompt)
        assert len(out.outputs[0].token_ids) == 2


def test_cached_prefix_is_recomputed_for_prompt_logprobs(llm, hf):
    ids = llm.tokenizer.encode(TEXTS[0] + " once more, with feeling")
    first = llm.generate([ids], SamplingParams(max_tokens=1, temperature=0))[0]
    again = llm.generate([ids], SamplingParams(max_tokens=1, temperature=0))[0]
    assert again.usage.cached_tokens > 0 and first.prompt is None  # the blocks are cached
    scored = llm.generate([ids], SamplingParams(max_tokens=1, temperature=0, echo=True,
                                                prompt_logprobs=1))[0]
    assert scored.usage.cached_tokens == 0
    _check(scored, hf, ids, 1)


def test_echo_with_max_tokens_0_ends_every_choice_empty(llm):
    ids = llm.tokenizer.encode(TEXTS[1])
    out = llm.generate([ids], SamplingParams(max_tokens=0, n=3, echo=True))[0]
    assert [(c.index, c.token_ids, c.finish_reason) for c in out.outputs] == [
        (i, [], "length") for i in range(3)]
    assert out.usage.completion_tokens == 0 and out.prompt.logprobs is None
    assert not llm.engine.has_unfinished() and llm.engine.stats().running == 0


def test_max_tokens_0_and_prompt_logprobs_need_echo():
    with pytest.raises(InvalidParameter) as err:
        SamplingParams(max_tokens=0)
    assert err.value.param == "max_tokens"
    with pytest.raises(InvalidParameter) as err:
        SamplingParams(prompt_logprobs=1)
    assert err.value.param == "prompt_logprobs"
