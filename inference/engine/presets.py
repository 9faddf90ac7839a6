"""Model configs for `dummy:<name>` models: random weights of real shapes, for benchmarks."""

from __future__ import annotations

from typing import Any

from .config import ModelConfig

PRESETS: dict[str, dict[str, Any]] = {
    "smollm2-135m": {
        "vocab_size": 49152,
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "head_dim": 64,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-5,
        "rope_theta": 100000.0,
        "tie_word_embeddings": True,
        "eos_token_id": 2,
    },
    "llama-3.1-8b": {
        "vocab_size": 128256,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "tie_word_embeddings": False,
        "eos_token_id": 128001,
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    },
    # Small enough for unit tests on two CPU cores.
    "tiny": {
        "vocab_size": 512,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "eos_token_id": 2,
    },
}

# Tensor-parallel tests: Qwen2's q/k/v bias with one KV head (replicated over the ranks) and
# a vocabulary that no TP size divides (padded); Qwen3's q/k norms with a wider head.
_TINY_QWEN = {**PRESETS["tiny"], "rope_theta": 1000000.0}
PRESETS["tiny-qwen2"] = {**_TINY_QWEN, "model_type": "qwen2", "vocab_size": 509,
                         "num_key_value_heads": 1, "tie_word_embeddings": True}
PRESETS["tiny-qwen3"] = {**_TINY_QWEN, "model_type": "qwen3", "head_dim": 32,
                         "tie_word_embeddings": False}

# Llama-3.1-70B: the 8B's vocabulary, heads of 128, KV heads and rope; wider and deeper.
PRESETS["llama-3.1-70b"] = {
    **PRESETS["llama-3.1-8b"],
    "hidden_size": 8192,
    "intermediate_size": 28672,
    "num_hidden_layers": 80,
    "num_attention_heads": 64,
}


def preset_config(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown dummy model {name!r}; known: {', '.join(PRESETS)}")
    return ModelConfig.from_hf(PRESETS[name], name=f"dummy:{name}")
