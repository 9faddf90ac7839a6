"""`load_format="dummy"` (vLLM's name): an HF folder with a config and tokenizer files but no
weights serves with random weights, so any shape can go through the whole mesh; "auto" on the
same folder still asks for weights. The folder is the `shaped` fixture (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference import LLM, SamplingParams
from inference.engine.loader import load_checkpoint
from inference.engine.model_store import resolve_model
from inference.engine.tokenizer import Tokenizer


def test_the_exported_tokenizer_reads_back_the_same(shaped: Path) -> None:
    original = load_checkpoint(resolve_model(None), need_weights=False).tokenizer
    again = Tokenizer.from_hf_folder(shaped)
    text = "Hello, world! <|im_start|>user"
    assert again.encode(text) == original.encode(text)
    msgs = [{"role": "user", "content": "hi"}]
    assert again.apply_chat_template(msgs, add_generation_prompt=True) == \
        original.apply_chat_template(msgs, add_generation_prompt=True)


def test_a_folder_without_weights_serves_random_weights_of_its_shape(shaped: Path) -> None:
    llm = LLM(str(shaped), load_format="dummy", max_model_len=256)
    assert llm.engine.model_config.hidden_size == 64 and llm.tokenizer is not None
    out = llm.generate(["Hello there"], SamplingParams(max_tokens=4, temperature=0,
                                                       ignore_eos=True))
    assert len(out[0].outputs[0].token_ids) == 4


def test_auto_still_needs_weights_and_an_unknown_format_is_refused(shaped: Path) -> None:
    with pytest.raises(ValueError, match="safetensors"):
        LLM(str(shaped))
    with pytest.raises(ValueError, match="load_format"):
        LLM(str(shaped), load_format="pickle")
