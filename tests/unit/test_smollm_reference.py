"""The real SmolLM2-135M-Instruct GGUF, loaded by us and by transformers: same greedy text."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from inference import LLM, SamplingParams

from .hf_reference import hf_greedy

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "Write a short poem about the sea and the wind."}]
NEW_TOKENS = 40


@pytest.fixture(scope="module")
def llm(smollm_gguf) -> LLM:
    return LLM(str(smollm_gguf), dtype="float32")  # the reference below is float32


@pytest.fixture(scope="module")
def hf(smollm_gguf):
    return AutoModelForCausalLM.from_pretrained(
        str(smollm_gguf.parent), gguf_file=smollm_gguf.name, dtype=torch.float32
    ).eval()


def test_greedy_chat_continuation_equals_transformers(llm, hf):
    prompt = llm.tokenizer.encode(llm.tokenizer.apply_chat_template(MESSAGES))
    params = SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0, ignore_eos=True)
    ours = llm.generate([prompt], params)[0].outputs[0].token_ids
    assert len(ours) == NEW_TOKENS >= 32
    assert ours == hf_greedy(hf, prompt, NEW_TOKENS)


def test_default_model_chats_and_stops_at_end_of_turn(llm):
    out = llm.chat(
        [{"role": "user", "content": "What is 2+2?"}], SamplingParams(max_tokens=64, temperature=0)
    )
    choice = out.outputs[0]
    assert choice.finish_reason == "stop"
    assert "4" in choice.text
    assert out.usage.completion_tokens == len(choice.token_ids)


def test_stop_string_cuts_real_text(llm):
    params = SamplingParams(max_tokens=40, temperature=0, ignore_eos=True)
    full = llm.generate("The capital of France is", params)[0].outputs[0].text
    word = full.split()[2]
    cut = llm.generate(
        "The capital of France is",
        SamplingParams(max_tokens=40, temperature=0, ignore_eos=True, stop=[word]),
    )[0].outputs[0]
    assert cut.finish_reason == "stop"
    assert cut.text == full[: full.index(word)]


def test_streamed_pieces_join_to_the_full_text(llm):
    engine = llm.engine
    ids = llm.tokenizer.encode("Emoji and accents: 🌊 café, 海, naïve. Continue:")
    engine.add_request("s", ids, SamplingParams(max_tokens=30, temperature=0.7, seed=3))
    pieces, tokens = [], []
    while engine.has_unfinished():
        for out in engine.step():
            pieces.append(out.text)
            tokens.extend(out.token_ids)
    text = "".join(pieces)
    assert text == llm.tokenizer.decode(tokens)
    assert "\ufffd" not in text


def test_int4_weights_still_answer(smollm_gguf):
    llm = LLM(str(smollm_gguf), dtype="bfloat16", quantization="int4")
    out = llm.chat(
        [{"role": "user", "content": "What is the capital of France?"}],
        SamplingParams(max_tokens=24, temperature=0),
    )
    assert "Paris" in out.outputs[0].text
