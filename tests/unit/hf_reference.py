"""The transformers reference: a twin holding exactly our model's weights, its logits, and the
check that our engine's logits equal them for a prefill (whole or chunked) and each decode."""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from inference.engine.engine import LLMEngine
from inference.engine.model import DecoderLM
from inference.engine.sampling_params import SamplingParams
from inference.engine.scheduler import ScheduledBatch
from inference.engine.sequence import Sequence

TOL = 1e-4


def hf_twin(model: DecoderLM) -> PreTrainedModel:
    """transformers' model of our config's `hf_model_type` (Llama, Qwen2, Qwen3), on our
    model's device and in its dtype, with the fused weights and biases split back out."""
    cfg = model.config
    hf_cfg = AutoConfig.for_model(cfg.hf_model_type, **cfg.to_hf())
    hf_cfg._attn_implementation = "eager"
    param = next(model.parameters())
    hf = AutoModelForCausalLM.from_config(hf_cfg).to(dtype=param.dtype, device=param.device)
    q, kv, inter = (
        cfg.num_heads * cfg.head_dim,
        cfg.num_kv_heads * cfg.head_dim,
        cfg.intermediate_size,
    )
    state = {}
    for name, p in model.state_dict().items():
        p = p.detach()
        if "qkv_proj" in name:  # weight or bias: both split along the output rows
            for part, t in zip("qkv", p.split([q, kv, kv]), strict=True):
                state["model." + name.replace("qkv_proj", f"{part}_proj")] = t
        elif "gate_up_proj" in name:
            for part, t in zip(("gate", "up"), p.split([inter, inter]), strict=True):
                state["model." + name.replace("gate_up_proj", f"{part}_proj")] = t
        elif name == "lm_head.weight":
            state[name] = p
        else:
            state["model." + name] = p
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    assert all(
        "rotary" in m or (cfg.tie_word_embeddings and m == "lm_head.weight") for m in missing
    ), missing
    return hf.eval()


@torch.no_grad()
def hf_logits(hf: PreTrainedModel, ids: list[int]) -> torch.Tensor:
    return hf(torch.tensor([ids], device=hf.device)).logits[0].float()


@torch.no_grad()
def hf_greedy(hf: PreTrainedModel, prompt: list[int], n: int) -> list[int]:
    """transformers' greedy continuation of `prompt`: exactly `n` new tokens (EOS ignored)."""
    out = hf.generate(torch.tensor([prompt], device=hf.device), max_new_tokens=n,
                      min_new_tokens=n, do_sample=False)
    return out[0, len(prompt):].tolist()


def run_tokens(engine: LLMEngine, seq: Sequence, n: int) -> torch.Tensor:
    """Compute the next `n` tokens of `seq` in one step; logits of every new token."""
    engine.kv.reserve(seq, n)
    batch = ScheduledBatch()
    batch.add(seq, n)
    runner = engine.runner
    ids, pos, meta, _, _ = runner.prepare(batch, [])
    runner.backend.begin_step(meta)
    with torch.inference_mode():
        hidden = runner.model(ids, pos, runner.kv_cache, meta)
        logits = runner.model.compute_logits(hidden)
    seq.num_computed_tokens += n
    return logits


def assert_logits_match(
    engine: LLMEngine, hf: PreTrainedModel, prompt: list[int], chunks: list[int], decodes: int
) -> None:
    """Prefill `prompt` in `chunks` (they must sum to its length), then decode greedily
    `decodes` times; every logit row within TOL (max abs) of transformers' on the same ids."""
    assert sum(chunks) == len(prompt)
    seq = Sequence(0, "r", 0, list(prompt), len(prompt), SamplingParams(), 0.0)
    got = torch.cat([run_tokens(engine, seq, n) for n in chunks])
    want = hf_logits(hf, prompt)
    assert (got - want).abs().max().item() <= TOL
    for _ in range(decodes):
        seq.token_ids.append(int(got[-1].argmax()))
        got = run_tokens(engine, seq, 1)
        want = hf_logits(hf, seq.token_ids)[-1:]
        assert (got - want).abs().max().item() <= TOL
