"""A checkpoint that declares itself an embedding model is served as one: a sentence-transformers
folder's pooling, an `XModel` architecture without an LM head (no generation), GGUF's
`pooling_type`; and the real default GGUF's vectors equal transformers'."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from inference import LLM, SamplingParams
from inference.engine.errors import InvalidParameter
from inference.engine.pooling_config import gguf_pooling

from .engine_driver import tiny_engine
from .hf_reference import hf_twin

IDS = [[5, 9, 14, 3, 77, 21], [40, 41, 42], list(range(100, 119))]


def _embedding_folder(tmp: Path, pooling_cfg: dict[str, bool]) -> tuple[Path, torch.nn.Module]:
    """A `LlamaModel` sentence-transformers folder of the tiny preset, and transformers' model
    holding the same weights."""
    hf = hf_twin(tiny_engine().runner.model).model  # LlamaModel: no LM head
    cfg = {**tiny_engine().model_config.to_hf(), "model_type": "llama",
           "architectures": ["LlamaModel"]}
    (tmp / "config.json").write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, tmp / "model.safetensors")
    (tmp / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling",
         "type": "sentence_transformers.models.Pooling"}]))
    (tmp / "1_Pooling").mkdir()
    (tmp / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": cfg["hidden_size"], **pooling_cfg}))
    return tmp, hf


def test_sentence_transformers_folder_pools_as_declared_and_does_not_generate(tmp_path):
    folder, hf = _embedding_folder(tmp_path, {"pooling_mode_mean_tokens": True})
    llm = LLM(str(folder), device="cpu", dtype="float32", num_kv_blocks=64, block_size=4)
    assert llm.engine.embedder.pooling == "mean"
    got = llm.embed(IDS)
    for ids, vec in zip(IDS, got, strict=True):
        with torch.no_grad():
            want = hf(torch.tensor([ids])).last_hidden_state[0].mean(0)
        want = torch.nn.functional.normalize(want, dim=0).numpy()
        assert np.abs(np.asarray(vec) - want).max() < 1e-5
    with pytest.raises(InvalidParameter, match="embedding model"):
        llm.generate([IDS[0]], SamplingParams(max_tokens=2))


def test_an_unsupported_declared_pooling_is_refused_at_load(tmp_path):
    folder, _ = _embedding_folder(tmp_path, {"pooling_mode_cls_token": True})
    with pytest.raises(ValueError, match="not supported"):
        LLM(str(folder), device="cpu", num_kv_blocks=64)


def test_gguf_pooling_type():
    assert gguf_pooling(Path("m.gguf"), {"qwen3.pooling_type": 3}, "qwen3") == "last"
    assert gguf_pooling(Path("m.gguf"), {"llama.pooling_type": 1}, "llama") == "mean"
    assert gguf_pooling(Path("m.gguf"), {}, "llama") is None
    with pytest.raises(ValueError, match="pooling_type 2"):
        gguf_pooling(Path("m.gguf"), {"llama.pooling_type": 2}, "llama")


@pytest.fixture(scope="module")
def hf_smollm(smollm_gguf):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        str(smollm_gguf.parent), gguf_file=smollm_gguf.name, dtype=torch.float32).eval()


@pytest.mark.slow
def test_default_gguf_mean_pooled_in_chunks_equals_transformers(smollm_gguf, hf_smollm):
    """(`last` pooling, the default, is checked through the mesh: test_embeddings.py.)"""
    pooling = "mean"
    llm = LLM(str(smollm_gguf), dtype="float32", pooling=pooling,
              max_num_batched_tokens=16)  # chunked
    texts = ["The sea and the wind.", "Vectors for retrieval, with accents: café, naïve."]
    got = llm.embed(texts)
    hf = hf_smollm
    for text, vec in zip(texts, got, strict=True):
        with torch.no_grad():
            h = hf.model(torch.tensor([llm.tokenizer.encode(text)])).last_hidden_state[0]
        want = h[-1] if pooling == "last" else h.mean(0)
        want = torch.nn.functional.normalize(want, dim=0).numpy()
        assert np.abs(np.asarray(vec) - want).max() < 1e-4
