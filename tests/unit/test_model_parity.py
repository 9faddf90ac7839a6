"""Our model's logits equal transformers' on the same random fp32 weights: for a whole
prefill, for prefill in chunks over the paged cache, and for every decode step; for Llama
shapes and for Qwen2's q/k/v bias and Qwen3's q/k norms (with a head_dim of its own)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from inference.engine.config import EngineConfig, ModelConfig, RopeScaling
from inference.engine.engine import LLMEngine
from inference.engine.presets import preset_config
from inference.engine.sampling_params import SamplingParams
from inference.engine.scheduler import ScheduledBatch
from inference.engine.sequence import Sequence

from .hf_reference import TOL, assert_logits_match, hf_logits, hf_twin, run_tokens


def _configs() -> dict[str, ModelConfig]:
    tiny = preset_config("tiny")
    return {
        "gqa": tiny,
        "tied": dataclasses.replace(tiny, tie_word_embeddings=True),
        "mha": dataclasses.replace(tiny, num_kv_heads=tiny.num_heads),
        "llama3-rope": dataclasses.replace(
            tiny,
            rope_theta=500000.0,
            rope_scaling=RopeScaling("llama3", 8.0, 1.0, 4.0, 64),
        ),
        "qwen2": dataclasses.replace(tiny, attention_bias=True, tie_word_embeddings=True),
        "qwen3": dataclasses.replace(tiny, qk_norm=True, head_dim=32, rope_theta=1e6),
    }


def _engine(mcfg: ModelConfig, block_size: int = 4) -> LLMEngine:
    cfg = EngineConfig(block_size=block_size, num_kv_blocks=128, device="cpu", dtype="float32")
    return LLMEngine(mcfg, cfg, None, lambda m: m.init_dummy(seed=7))


@pytest.mark.parametrize("name", list(_configs()))
@pytest.mark.parametrize("chunks", [[23], [5, 11, 7]], ids=["whole", "chunked"])
def test_logits_match_transformers_for_prefill_and_each_decode_step(name, chunks):
    engine = _engine(_configs()[name])
    hf = hf_twin(engine.runner.model)
    prompt = torch.randint(0, engine.model_config.vocab_size, (sum(chunks),)).tolist()
    assert_logits_match(engine, hf, prompt, chunks, decodes=12)


def test_batched_mixed_prefill_and_decode_rows_match_transformers():
    engine = _engine(_configs()["gqa"], block_size=8)
    hf = hf_twin(engine.runner.model)
    gen = torch.Generator().manual_seed(3)
    prompts = [torch.randint(0, 512, (n,), generator=gen).tolist() for n in (9, 17, 3)]
    seqs = [
        Sequence(i, f"r{i}", 0, list(p), len(p), SamplingParams(), 0.0)
        for i, p in enumerate(prompts)
    ]
    run_tokens(engine, seqs[0], 9)  # seq 0 decodes in the mixed step; 1 and 2 prefill there
    seqs[0].token_ids.append(5)
    batch = ScheduledBatch()
    for s in seqs:
        n = s.num_new_tokens
        engine.kv.reserve(s, n)
        batch.add(s, n)
    runner = engine.runner
    ids, pos, meta, last, _ = runner.prepare(batch, list(range(len(seqs))))
    runner.backend.begin_step(meta)
    with torch.inference_mode():
        logits = runner.model.compute_logits(runner.model(ids, pos, runner.kv_cache, meta))
    for s, row in zip(seqs, last.tolist(), strict=True):
        want = hf_logits(hf, s.token_ids)[-1]
        assert (logits[row] - want).abs().max().item() <= TOL
