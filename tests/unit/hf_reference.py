"""Build a transformers `LlamaForCausalLM` holding exactly our model's weights."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from inference.engine.model import LlamaForCausalLM as OurLlama


def hf_twin(model: OurLlama) -> LlamaForCausalLM:
    """On our model's device and in its dtype, with the fused weights split back out."""
    cfg = model.config
    hf_cfg = LlamaConfig(**cfg.to_hf())
    hf_cfg._attn_implementation = "eager"
    param = next(model.parameters())
    hf = LlamaForCausalLM(hf_cfg).to(dtype=param.dtype, device=param.device).eval()
    q, kv, inter = (
        cfg.num_heads * cfg.head_dim,
        cfg.num_kv_heads * cfg.head_dim,
        cfg.intermediate_size,
    )
    state = {}
    for name, p in model.state_dict().items():
        p = p.detach()
        if "qkv_proj" in name:
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
    return hf


@torch.no_grad()
def hf_logits(hf: LlamaForCausalLM, ids: list[int]) -> torch.Tensor:
    return hf(torch.tensor([ids], device=hf.device)).logits[0].float()
