"""Llama-family decoder (Llama 2/3, SmolLM2, Mistral, Qwen2, Qwen3) with fused QKV and gate-up
projections. Qwen2 adds a q/k/v bias (`ModelConfig.attention_bias`), Qwen3 a per-head RMSNorm
of q and k before RoPE (`ModelConfig.qk_norm`); with both flags off the layer is Llama's,
parameter for parameter.

`forward(input_ids, positions, kv_cache, meta)` takes a flat batch of T new tokens and returns
their final hidden states `[T, hidden]`; `compute_logits` applies the LM head only to the rows
the runner samples from. Attention goes through the backend given at construction, so the
model code is the same on every device. `load_weights` takes Hugging Face names and layouts
and fuses q/k/v (weights and biases) and gate/up itself.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .attention import AttentionBackend, AttentionMetadata
from .config import ModelConfig
from .rotary import RotaryEmbedding

try:  # CUDA builds of PyTorch bring Triton; the fused kernels run on CUDA tensors only.
    from .triton_kernels import fused as _fused
except ImportError:  # CPU-only install: the plain PyTorch code below computes the same
    _fused = None


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Adds `residual` first when given; returns (normed, the new residual stream)."""
        if _fused is not None and x.is_cuda:  # hot path: one kernel, same rounding
            if residual is None:
                return _fused.rms_norm(x, self.weight, self.eps), x
            return _fused.fused_add_rms_norm(x, residual, self.weight, self.eps)
        if residual is not None:
            x = x + residual
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed.to(x.dtype) * self.weight), x


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int, backend: AttentionBackend, rope: nn.Module):
        super().__init__()
        self.layer = layer
        self.heads, self.kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_size = self.heads * self.head_dim
        self.kv_size = self.kv_heads * self.head_dim
        self.qkv_proj = nn.Linear(
            cfg.hidden_size, self.q_size + 2 * self.kv_size, bias=cfg.attention_bias
        )
        self.o_proj = nn.Linear(self.q_size, cfg.hidden_size, bias=False)
        self.qk_norm = cfg.qk_norm
        if cfg.qk_norm:  # registered only for Qwen3, so a Llama state dict stays exactly Llama's
            self.q_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)
        self.backend = backend
        self.rope = rope
        self.scale = self.head_dim**-0.5

    def forward(
        self, positions: torch.Tensor, x: torch.Tensor, kv: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        q, k, v = self.qkv_proj(x).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.view(-1, self.heads, self.head_dim)
        k = k.view(-1, self.kv_heads, self.head_dim)
        if self.qk_norm:
            q, k = _norm_heads(self.q_norm, q), _norm_heads(self.k_norm, k)
        q, k = self.rope(positions, q, k)
        v = v.view(-1, self.kv_heads, self.head_dim)
        out = self.backend.forward(q, k, v, kv[self.layer], meta, self.scale)
        return self.o_proj(out.reshape(-1, self.q_size))


def _norm_heads(norm: RMSNorm, x: torch.Tensor) -> torch.Tensor:
    """RMSNorm over the last dim of `x` [T, heads, head_dim]; a new tensor of that shape.

    The fused CUDA kernel steps from row to row by `stride(-2)`, so it must see one dense
    [T * heads, head_dim] matrix, never a strided view of the QKV output: `reshape` gives
    exactly that (a copy when the view cannot be flattened).
    """
    t, h, d = x.shape
    return norm(x.reshape(t * h, d))[0].view(t, h, d)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.inter = cfg.intermediate_size
        self.gate_up_proj = nn.Linear(cfg.hidden_size, 2 * self.inter, bias=False)
        self.down_proj = nn.Linear(self.inter, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _fused is not None and x.is_cuda:  # hot path: SiLU·mul in one kernel
            return self.down_proj(_fused.silu_and_mul(self.gate_up_proj(x)))
        gate, up = self.gate_up_proj(x).split(self.inter, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int, backend: AttentionBackend, rope: nn.Module):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg, layer, backend, rope)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(
        self,
        positions: torch.Tensor,
        x: torch.Tensor,
        residual: torch.Tensor | None,
        kv: torch.Tensor,
        meta: AttentionMetadata,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h, residual = self.input_layernorm(x, residual)
        h = self.self_attn(positions, h, kv, meta)
        h, residual = self.post_attention_layernorm(h, residual)
        return self.mlp(h), residual


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg: ModelConfig, backend: AttentionBackend, max_positions: int):
        super().__init__()
        self.config = cfg
        rope = RotaryEmbedding(cfg, max_positions)
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(
            DecoderLayer(cfg, i, backend, rope) for i in range(cfg.num_layers)
        )
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.rope = rope

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_cache: torch.Tensor,
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        x = self.embed_tokens(input_ids)
        residual = None
        for layer in self.layers:
            x, residual = layer(positions, x, residual, kv_cache, meta)
        return self.norm(x, residual)[0]

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden).float()

    @torch.no_grad()
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy Hugging Face-named tensors in; raises if any parameter was left unset."""
        params = dict(self.named_parameters())
        unset = set(params)
        if self.config.tie_word_embeddings or not self.config.generates:
            unset.discard("lm_head.weight")  # tied, or an embedding model's: it has none
        for name, tensor in weights:
            target, shard = _fused_target(name.removeprefix("model."))
            if target not in params:
                if "rotary_emb" in name:
                    continue
                raise ValueError(
                    f"unexpected weight {name!r} for a {self.config.hf_model_type} model"
                )
            param = params[target]
            if shard is None:
                if param.shape != tensor.shape:
                    raise ValueError(f"{name}: shape {tuple(tensor.shape)}, want {param.shape}")
                param.copy_(tensor)
            else:
                self._copy_shard(param, target, shard, tensor)
            unset.discard(target)
        if unset:
            raise ValueError(f"checkpoint lacks weights: {sorted(unset)[:5]}")

    def _copy_shard(self, param: torch.Tensor, target: str, shard: str, t: torch.Tensor) -> None:
        cfg = self.config
        q, kv, inter = (
            cfg.num_heads * cfg.head_dim,
            cfg.num_kv_heads * cfg.head_dim,
            cfg.intermediate_size,
        )
        start, size = {
            "q": (0, q),
            "k": (q, kv),
            "v": (q + kv, kv),
            "gate": (0, inter),
            "up": (inter, inter),
        }[shard]
        want = (size, *param.shape[1:])  # a weight [rows, in] or a bias [rows]
        if t.shape != want:
            raise ValueError(f"{target}/{shard}: shape {tuple(t.shape)}, want {want}")
        param[start : start + size].copy_(t)

    def init_dummy(self, seed: int = 0) -> None:
        """Random weights of the right scale, for benchmarks and reference tests."""
        device = next(self.parameters()).device
        gen = torch.Generator(device=device).manual_seed(seed)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith(_NORM_WEIGHTS) or name == "norm.weight":
                    p.copy_(
                        1.0
                        + 0.1 * torch.randn(p.shape, generator=gen, device=device, dtype=p.dtype)
                    )
                else:
                    p.copy_(
                        0.02 * torch.randn(p.shape, generator=gen, device=device, dtype=p.dtype)
                    )


_NORM_WEIGHTS = ("layernorm.weight", "q_norm.weight", "k_norm.weight")
_SHARDS = {
    "self_attn.q_proj": ("self_attn.qkv_proj", "q"),
    "self_attn.k_proj": ("self_attn.qkv_proj", "k"),
    "self_attn.v_proj": ("self_attn.qkv_proj", "v"),
    "mlp.gate_proj": ("mlp.gate_up_proj", "gate"),
    "mlp.up_proj": ("mlp.gate_up_proj", "up"),
}


def _fused_target(name: str) -> tuple[str, str | None]:
    for src, (dst, shard) in _SHARDS.items():
        if f".{src}." in name:
            return name.replace(src, dst), shard
    return name, None
