"""Qwen2 and Qwen3 checkpoints that transformers itself wrote (save_pretrained, safetensors)
load through our loader and compute what transformers computes: the same logits for a
prefill and each decode step, and the same greedy continuation through `LLM`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import (
    PretrainedConfig,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from inference import LLM, SamplingParams
from inference.engine.config import EngineConfig
from inference.engine.engine import LLMEngine
from inference.engine.loader import load_checkpoint

from .hf_reference import assert_logits_match, hf_greedy

NEW_TOKENS = 16
_SHAPE = {  # GQA (4 query heads over 2 KV heads), two layers: seconds on two CPU cores
    "vocab_size": 256,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "rope_theta": 1e6,
    "initializer_range": 0.2,  # at HF's 0.02 a tiny random model repeats one token forever
}


def _qwen2() -> tuple[PretrainedConfig, type[PreTrainedModel]]:
    return Qwen2Config(**_SHAPE, tie_word_embeddings=True), Qwen2ForCausalLM


def _qwen3() -> tuple[PretrainedConfig, type[PreTrainedModel]]:
    # head_dim 32 while hidden/heads is 16: Qwen3 sizes heads on their own.
    return Qwen3Config(**_SHAPE, head_dim=32, tie_word_embeddings=False), Qwen3ForCausalLM


@pytest.fixture(scope="module", params=[_qwen2, _qwen3], ids=["qwen2", "qwen3"])
def saved(request, tmp_path_factory) -> tuple[Path, PreTrainedModel]:
    """A random fp32 model (biases and norm weights made non-trivial) saved to a folder."""
    cfg, cls = request.param()
    torch.manual_seed(0)
    hf = cls(cfg).float().eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith(("bias", "norm.weight")):  # HF inits these to 0 and 1
                p.add_(0.1 * torch.randn_like(p))
    folder = tmp_path_factory.mktemp(cfg.model_type)
    hf.save_pretrained(folder, safe_serialization=True)
    hf.config._attn_implementation = "eager"
    return folder, hf


def test_config_json_sets_the_qwen_layer(saved) -> None:
    folder, hf = saved
    cfg = load_checkpoint(folder).config
    assert cfg.hf_model_type == hf.config.model_type
    assert cfg.attention_bias == (hf.config.model_type == "qwen2")
    assert cfg.qk_norm == (hf.config.model_type == "qwen3")
    assert cfg.head_dim == hf.model.layers[0].self_attn.head_dim
    assert cfg.tie_word_embeddings == hf.config.tie_word_embeddings


@pytest.mark.parametrize("chunks", [[19], [6, 8, 5]], ids=["whole", "chunked"])
def test_logits_equal_transformers_for_prefill_and_decode(saved, chunks) -> None:
    folder, hf = saved
    ck = load_checkpoint(folder)
    ecfg = EngineConfig(block_size=4, num_kv_blocks=64, device="cpu", dtype="float32")
    engine = LLMEngine(ck.config, ecfg, None, lambda m: m.load_weights(ck.weights()))
    prompt = torch.randint(0, ck.config.vocab_size, (sum(chunks),)).tolist()
    assert_logits_match(engine, hf, prompt, chunks, decodes=8)


def test_greedy_generation_equals_transformers(saved) -> None:
    folder, hf = saved
    llm = LLM(str(folder), device="cpu", dtype="float32", block_size=4, num_kv_blocks=64)
    prompts = [[3, 17, 99, 42, 5, 200, 7], [250, 1, 64]]
    params = SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0, ignore_eos=True)
    ours = [out.outputs[0].token_ids for out in llm.generate(prompts, params)]
    for prompt, got in zip(prompts, ours, strict=True):
        assert len(set(got)) > 2  # a real continuation, not one token repeated
        assert got == hf_greedy(hf, prompt, NEW_TOKENS)


def _write_gguf(hf: PreTrainedModel, path: Path) -> None:
    """`hf`'s weights as llama.cpp writes a Qwen model: gguf's own name map, F32, and Q/K
    rows left in HF order (its converter permutes only Llama's)."""
    import gguf

    c = hf.config
    arch = c.model_type
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(c.num_hidden_layers)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_key_length(hf.model.layers[0].self_attn.head_dim)
    w.add_context_length(c.max_position_embeddings)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_freq_base(_SHAPE["rope_theta"])
    w.add_vocab_size(c.vocab_size)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], c.num_hidden_layers)
    for name, t in hf.state_dict().items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue
        w.add_tensor(names.get_name(name, try_suffixes=(".weight", ".bias")), t.numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gguf_of_the_same_model_loads_the_same_config_and_weights(saved, tmp_path) -> None:
    folder, hf = saved
    path = tmp_path / "model.gguf"
    _write_gguf(hf, path)
    from_gguf, from_folder = load_checkpoint(path), load_checkpoint(folder)
    got_cfg, want_cfg = from_gguf.config.to_hf(), from_folder.config.to_hf()
    # GGUF stores the epsilon as float32.
    assert got_cfg.pop("rms_norm_eps") == pytest.approx(want_cfg.pop("rms_norm_eps"))
    assert got_cfg == want_cfg
    assert from_gguf.config.hf_model_type == hf.config.model_type
    got, want = dict(from_gguf.weights()), dict(from_folder.weights())
    assert set(got) == set(want)
    assert all(torch.equal(got[n], want[n]) for n in want)
