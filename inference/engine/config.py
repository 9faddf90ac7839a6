"""Typed configuration of the engine: the model's shape and the engine's budgets.

`ModelConfig` is read from a Hugging Face `config.json` dict (or built from GGUF metadata by the
loader); `EngineConfig` holds everything an operator tunes. Both are frozen: one object flows
from the loader to the scheduler, the KV cache and the runner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RopeScaling:
    """Llama-3 style frequency scaling; `kind == "llama3"` is the only one applied."""

    kind: str = "none"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position: int = 8192


@dataclass(frozen=True)
class ModelConfig:
    """The decoder's shape. Two flags turn the Llama layer into Qwen's; both off is Llama:

    - `attention_bias`: q/k/v projections carry a bias (Qwen2); o_proj never does.
    - `qk_norm`: per-head RMSNorm on q and k before RoPE (Qwen3), weights `[head_dim]`.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_position: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling = field(default_factory=RopeScaling)
    tie_word_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    name: str = "model"
    attention_bias: bool = False
    qk_norm: bool = False
    pooling: str | None = None  # an embedding model's declared pooling (last, mean), if any
    generates: bool = True  # False: an embedding model without an LM head (pooling_config.py)

    @property
    def hf_model_type(self) -> str:
        """The Hugging Face `model_type` whose layer this config describes."""
        if self.qk_norm:
            return "qwen3"
        return "qwen2" if self.attention_bias else "llama"

    @classmethod
    def from_hf(cls, cfg: dict[str, Any], name: str = "model") -> ModelConfig:
        """Build from a Hugging Face `config.json` dict (`model_type` llama, mistral, qwen2 or
        qwen3; absent means llama). ValueError for an output-projection bias, which no
        supported layer has, and for Qwen's sliding window; KeyError for a missing field."""
        model_type = cfg.get("model_type", "llama")
        if model_type != "qwen2" and cfg.get("attention_bias"):
            raise ValueError(f"{model_type}: attention_bias (an o_proj bias) is not supported")
        if model_type in ("qwen2", "qwen3") and cfg.get("use_sliding_window"):
            raise ValueError(f"{model_type}: use_sliding_window is not supported")
        heads = cfg["num_attention_heads"]
        rs = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
        kind = rs.get("rope_type", rs.get("type", "none")) if rs else "none"
        scaling = RopeScaling(
            kind=kind if kind == "llama3" else "none",
            factor=float(rs.get("factor", 1.0)),
            low_freq_factor=float(rs.get("low_freq_factor", 1.0)),
            high_freq_factor=float(rs.get("high_freq_factor", 4.0)),
            original_max_position=int(rs.get("original_max_position_embeddings", 8192)),
        )
        theta = cfg.get("rope_theta", rs.get("rope_theta", 10000.0) if rs else 10000.0)
        eos = cfg.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (eos,))
        return cls(
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_layers=cfg["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=cfg.get("num_key_value_heads", heads),
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
            max_position=cfg.get("max_position_embeddings", 2048),
            rms_norm_eps=cfg.get("rms_norm_eps", 1e-5),
            rope_theta=float(theta),
            rope_scaling=scaling,
            tie_word_embeddings=cfg.get("tie_word_embeddings", False),
            bos_token_id=cfg.get("bos_token_id"),
            eos_token_ids=eos_ids,
            name=name,
            attention_bias=model_type == "qwen2",
            qk_norm=model_type == "qwen3",
        )

    def to_hf(self) -> dict[str, Any]:
        """The equivalent Hugging Face config kwargs for `hf_model_type` (tests build the
        reference from them): `LlamaConfig`'s, or `Qwen2Config`'s / `Qwen3Config`'s."""
        out: dict[str, Any] = {
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "max_position_embeddings": self.max_position,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "tie_word_embeddings": self.tie_word_embeddings,
        }
        if self.hf_model_type == "llama":
            out["mlp_bias"] = False
        if self.hf_model_type != "qwen2":  # Qwen2's q/k/v bias is implied, not configured
            out["attention_bias"] = False
        if self.rope_scaling.kind == "llama3":
            out["rope_scaling"] = {
                "rope_type": "llama3",
                "factor": self.rope_scaling.factor,
                "low_freq_factor": self.rope_scaling.low_freq_factor,
                "high_freq_factor": self.rope_scaling.high_freq_factor,
                "original_max_position_embeddings": self.rope_scaling.original_max_position,
            }
        return out


# Tokens per KV block a worker accepts: powers of two up to 256. Other sizes were never
# exercised (kernels, block hashing, routing), so they are refused rather than trusted.
_BLOCK_SIZES = tuple(2**i for i in range(9))


@dataclass(frozen=True)
class EngineConfig:
    """Operator knobs. Budgets are per engine step.

    - `max_num_batched_tokens`: tokens (prefill chunks + one per decode) computed in one step.
    - `max_num_seqs`: sequences in one step.
    - `enforce_eager`: no CUDA graphs. `cuda_graph_max_tokens`: the largest step that computes
      prompt tokens to replay from a captured graph (cuda_graphs.py), in token buckets 16, 32,
      .. up to it, with at most 64 sequences (a step no one graph holds replays a decode
      graph for its leading decodes and up to eight mixed graphs for its prompt chunks, each
      chunk whole); 0 captures decode graphs only. A step no such plan fits runs eagerly
      (a chunk over the largest bucket, a burst of prompts beyond eight graphs).
    - `num_kv_blocks`: None sizes the pool from memory (`kv_cache_memory` bytes on CPU,
      `gpu_memory_utilization` of the device on CUDA).
    - `dtype`: the model's, "float32", "bfloat16", "float16", or "auto" (placement.pick_dtype):
      bfloat16 on CUDA and on a CPU with native bf16 dot products, float32 on other CPUs.
    - `quantization`: None, or "int4" (CPU only): 4-bit weight-only projections, see quant.py.
    - `kv_cache_dtype`: "auto" (the model's dtype) or "fp8" (CUDA only): the KV pool is stored
      as float8 e4m3 (per-tensor scale 1.0, values saturated to +-448), half the bytes per
      block, so twice the blocks; the attention kernels upcast on load.
    - `load_format`: "auto" (weights from the checkpoint) or "dummy" (vLLM's name): the model's
      config and tokenizer from the checkpoint (an HF folder needs no weight files), random
      weights seeded by `seed`, for serving any shape through the whole mesh.
    - `async_scheduling`: launch step N+1 before reading step N's tokens, so the host's work
      per step hides behind the device's (inflight.py). None (the default) turns it on where
      the device computes while the host goes on (CUDA) and off on the CPU, where the forward
      pass runs on the host itself: there it would gain nothing and hold every output back
      by one step. Off, each step waits for its own tokens: the plain loop, kept as the
      reference the overlapped one is tested against.
    - `pooling`: how embedding requests pool hidden states (inference/engine/embedding.py):
      "auto" (the model's declared pooling, else "last"), "last", "mean", or "none" (no
      embeddings). `normalize_embeddings`: scale each vector to unit L2 norm.
    - `tensor_parallel_size`: ranks (processes; GPUs `cuda:0..N-1` on CUDA, gloo on CPU) that
      each hold a slice of every layer and of the KV pool (tp_launch.py). It must divide the
      model's attention heads and intermediate size; KV heads are split, or replicated when
      there are fewer than ranks.
    """

    block_size: int = 16
    num_kv_blocks: int | None = None
    kv_cache_memory: int = 512 * 2**20
    gpu_memory_utilization: float = 0.9
    max_num_batched_tokens: int = 2048
    max_num_seqs: int = 64
    max_model_len: int | None = None
    enable_prefix_caching: bool = True
    device: str = "auto"
    dtype: str = "auto"
    enforce_eager: bool = False
    cuda_graph_max_tokens: int = 512
    quantization: str | None = None
    kv_cache_dtype: str = "auto"
    load_format: str = "auto"
    seed: int = 0
    async_scheduling: bool | None = None
    pooling: str = "auto"
    normalize_embeddings: bool = True
    tensor_parallel_size: int = 1

    def __post_init__(self) -> None:
        """Refuse a value outside its range here, naming the field, rather than as an
        obscure failure (or a worker that never schedules anything) later."""
        low = {"num_kv_blocks": 1, "kv_cache_memory": 1, "max_num_batched_tokens": 1,
               "max_num_seqs": 1, "max_model_len": 1, "cuda_graph_max_tokens": 0,
               "tensor_parallel_size": 1, "seed": 0}  # no field has a negative sentinel
        for name, least in low.items():
            value = getattr(self, name)
            if value is not None and value < least:
                raise ValueError(f"{name}={value}: must be at least {least}")
        if self.block_size not in _BLOCK_SIZES:
            raise ValueError(f"block_size={self.block_size}: must be a power of two from 1 to "
                             f"{_BLOCK_SIZES[-1]}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization={self.gpu_memory_utilization}: must be in "
                             "(0, 1]")
