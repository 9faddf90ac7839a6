"""Llama-family decoder (Llama 2/3, SmolLM2, Mistral, Qwen2, Qwen3) with fused QKV and gate-up
projections. Qwen2 adds a q/k/v bias (`ModelConfig.attention_bias`), Qwen3 a per-head RMSNorm
of q and k before RoPE (`ModelConfig.qk_norm`); with both flags off the layer is Llama's,
parameter for parameter.

`forward(input_ids, positions, kv_cache, meta)` takes a flat batch of T new tokens and returns
their final hidden states `[T, hidden]`; `compute_logits` applies the LM head only to the rows
the runner samples from. Attention goes through the backend given at construction, so the
model code is the same on every device. `load_weights` takes Hugging Face names and layouts
and fuses q/k/v (weights and biases) and gate/up itself.

Tensor parallelism (parallel_linear.py) is Megatron's: QKV and gate-up split by output rows
(heads), o_proj and down_proj by input columns with one all-reduce each per layer, the
embedding and LM head by vocabulary rows. A rank's heads and KV heads are `self.heads` and
`self.kv_heads`; `shard_slice(name)` says which part of a checkpoint tensor this rank reads.
At TP=1 every layer is the plain one and no collective runs.

On CUDA a batch of up to 16 rows (small-batch decode) runs its projections through the skinny
kernel (`_project`, `triton_kernels/skinny_linear.py`) instead of cuBLAS, with the element-wise
kernels next to them folded in where that saves a launch (issue 16): the QKV projection
rotates q and k and writes k and v to the pool itself (`triton_kernels/qkv_rope_cache.py`;
not Qwen3), so attention only attends; and at one row the down projection computes the MLP's
SiLU·mul as it loads its input. Where `skinny_linear.takes_norm` says so (one row of a small
model) the layers run `forward_summed`: the O and down projections add the residual, and the
QKV and gate-up projections apply the RMSNorm before them, with no norm kernel.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .attention import AttentionBackend, AttentionMetadata, Rope
from .config import ModelConfig
from .distributed import group
from .parallel_linear import (
    ColumnParallelLinear,
    ParallelLMHead,
    RowParallelLinear,
    Slice,
    VocabParallelEmbedding,
    check_divisible,
    head_part,
    split_part,
)
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
        self.head_dim = cfg.head_dim
        q = head_part("q", cfg.num_heads, cfg.head_dim)
        k, v = (head_part(n, cfg.num_kv_heads, cfg.head_dim) for n in "kv")
        self.q_size, self.kv_size = q.local, k.local  # this rank's heads
        self.heads, self.kv_heads = q.local // cfg.head_dim, k.local // cfg.head_dim
        self.qkv_proj = ColumnParallelLinear(cfg.hidden_size, [q, k, v], cfg.attention_bias)
        self.o_proj = RowParallelLinear(q.full, cfg.hidden_size)
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
        """The O projection's output for the normed `x`; this step's keys and values go into
        `kv[self.layer]`."""
        return _project(self.o_proj, self.heads_out(positions, x, kv, meta))

    def heads_out(self, positions: torch.Tensor, x: torch.Tensor, kv: torch.Tensor,
                  meta: AttentionMetadata, norm: _fused.RowNorm | None = None) -> torch.Tensor:
        """Attention's output before the O projection, `[T, heads * head_dim]`. With `norm`,
        `x` is the residual stream (`Summed.stream`) that `norm` normalises first: the QKV
        kernel norms it as it loads."""
        if self._rope_in_projection(x):  # one launch: (norm,) projection, RoPE, KV write
            q = _fused.qkv_rope_cache(
                x, self.qkv_proj.weight, self.qkv_proj.bias, self.heads, kv[self.layer],
                meta.slot_mapping, positions, self.rope.cos, self.rope.sin, norm)
            out = self.backend.attend(q, kv[self.layer], meta, self.scale)
        else:
            if norm is not None:
                x = _fused.rms_norm(x, norm.weight, norm.eps)
            out = self._attend(positions, _project(self.qkv_proj, x), kv, meta)
        return out.reshape(-1, self.q_size)

    def _rope_in_projection(self, x: torch.Tensor) -> bool:
        """Whether the QKV kernel itself rotates and writes the cache: a small CUDA batch
        through a backend that takes the pool written (not Qwen3: its per-head q/k norm
        comes between the projection and RoPE)."""
        return (_fused is not None and x.is_cuda and self.backend.fuses_rope
                and not self.qk_norm and _fused.skinny(x, self.qkv_proj.weight))

    def _attend(self, positions: torch.Tensor, qkv: torch.Tensor, kv: torch.Tensor,
                meta: AttentionMetadata) -> torch.Tensor:
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.view(-1, self.heads, self.head_dim)
        k = k.view(-1, self.kv_heads, self.head_dim)
        if self.qk_norm:
            q, k = _norm_heads(self.q_norm, q), _norm_heads(self.k_norm, k)
        v = v.view(-1, self.kv_heads, self.head_dim)
        if self.backend.fuses_rope:  # CUDA's hot path: RoPE inside the KV write
            rope = Rope(positions, self.rope.cos, self.rope.sin)
            return self.backend.forward(q, k, v, kv[self.layer], meta, self.scale, rope)
        q, k = self.rope(positions, q, k)
        return self.backend.forward(q, k, v, kv[self.layer], meta, self.scale)


def _project(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """`linear(x)`; a small CUDA batch through the skinny kernel, faster than cuBLAS there."""
    if _fused is None or not x.is_cuda or not _fused.skinny(x, linear.weight):
        return linear(x)  # (a CPU int4 linear has no `weight`: is_cuda is asked first)
    y = _fused.skinny_linear(x, linear.weight, linear.bias)
    return linear.reduce(y) if isinstance(linear, RowParallelLinear) else y


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
        parts = [split_part(n, cfg.intermediate_size) for n in ("gate", "up")]
        self.inter = parts[0].local
        self.gate_up_proj = ColumnParallelLinear(cfg.hidden_size, parts, bias=False)
        self.down_proj = RowParallelLinear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up = _project(self.gate_up_proj, x)
        if _fused is None or not x.is_cuda:
            gate, up = gate_up.split(self.inter, dim=-1)
            return self.down_proj(F.silu(gate) * up)
        one_row = gate_up.shape[0] == 1
        if one_row and _fused.skinny(gate_up, self.down_proj.weight):  # SiLU·mul inside it
            return self.down_proj.reduce(
                _fused.skinny_linear(gate_up, self.down_proj.weight, silu_mul=True))
        return _project(self.down_proj, _fused.silu_and_mul(gate_up))


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

    def forward_summed(
        self,
        positions: torch.Tensor,
        x: torch.Tensor | _fused.Summed,
        kv: torch.Tensor,
        meta: AttentionMetadata,
    ) -> _fused.Summed:
        """`forward` for one row of a small model on CUDA (`DecoderLM.norms_in_projections`)
        with no norm kernel: the O and down projections add the residual and leave its sums
        of squares, and the QKV and gate-up projections norm their input as they load it.
        `x` is the previous layer's `Summed`, or the embeddings (then the first norm runs
        apart). Returns the residual stream after this layer, the MLP's output added."""
        attn, mlp = self.self_attn, self.mlp
        if isinstance(x, _fused.Summed):
            residual, norm = x.stream, self.input_layernorm
            h = attn.heads_out(positions, residual, kv, meta,
                               _fused.RowNorm(x.sumsq, norm.weight, norm.eps))
        else:
            residual = x
            h = attn.heads_out(positions, self.input_layernorm(x)[0], kv, meta)
        mid = _fused.skinny_linear_add(h, attn.o_proj.weight, residual)
        post = self.post_attention_layernorm
        gate_up = _fused.skinny_linear(mid.stream, mlp.gate_up_proj.weight,
                                       norm=_fused.RowNorm(mid.sumsq, post.weight, post.eps))
        # SiLU·mul inside the down projection, as MLP.forward does at one row
        return _fused.skinny_linear_add(gate_up, mlp.down_proj.weight, mid.stream,
                                        silu_mul=True)


class DecoderLM(nn.Module):
    """The one decoder-only language model the engine runs: every family the module docstring
    lists (Llama, SmolLM2, Mistral, Qwen2, Qwen3), told apart by `ModelConfig` flags alone.
    Its parameter names are Hugging Face's (`embed_tokens`, `layers.i.self_attn...`, `norm`,
    `lm_head`), whatever the family, so checkpoints load by name."""

    def __init__(self, cfg: ModelConfig, backend: AttentionBackend, max_positions: int):
        super().__init__()
        self.tp = group()  # the process's TP group when built; TP=1 without one
        check_divisible(cfg.num_heads, cfg.num_kv_heads, cfg.intermediate_size, self.tp.size)
        self.config = cfg
        rope = RotaryEmbedding(cfg, max_positions)
        self.embed_tokens = VocabParallelEmbedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(
            DecoderLayer(cfg, i, backend, rope) for i in range(cfg.num_layers)
        )
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = ParallelLMHead(cfg.hidden_size, cfg.vocab_size)
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
        if self.norms_in_projections(x):
            for layer in self.layers:
                x = layer.forward_summed(positions, x, kv_cache, meta)
            return self.norm(x.stream)[0]
        residual = None
        for layer in self.layers:
            x, residual = layer(positions, x, residual, kv_cache, meta)
        return self.norm(x, residual)[0]

    def norms_in_projections(self, x: torch.Tensor) -> bool:
        """Whether the layers run `forward_summed` (two launches fewer a layer): a batch the
        skinny kernel takes and that gains by it (`skinny_linear.takes_norm`: one row of a
        hidden size the projections load as one tile), at TP=1 (the O and down
        projections' all-reduce would come between the product and the residual add)."""
        return (_fused is not None and x.is_cuda and self.tp.size == 1
                and _fused.skinny(x, self.layers[0].mlp.gate_up_proj.weight)
                and _fused.takes_norm(x, self.config.hidden_size))

    @property
    def kv_heads(self) -> int:
        """KV heads this rank keeps in its slice of the paged pool."""
        return self.layers[0].self_attn.kv_heads

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor | None:
        """Float32 logits of `hidden`'s rows; on ranks other than 0 of a TP group, None."""
        return self.lm_head(hidden)

    def shard_slice(self, name: str) -> Slice | None:
        """The part `(dim, start, stop)` of the Hugging Face tensor `name` this rank holds;
        None for all of it (every tensor at TP=1; norms always)."""
        if self.tp.size == 1:
            return None
        target, shard = _fused_target(name.removeprefix("model."))
        owner = self.get_submodule(target.rpartition(".")[0])
        slicer = getattr(owner, "tp_slice", None)
        return None if slicer is None else slicer(shard)

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
            owner = self.get_submodule(target.rpartition(".")[0])
            if hasattr(owner, "load"):  # a parallel layer: takes its slice, fuses its parts
                owner.load(params[target], shard, tensor)
            elif params[target].shape != tensor.shape:
                raise ValueError(f"{name}: shape {tuple(tensor.shape)}, want "
                                 f"{tuple(params[target].shape)}")
            else:
                params[target].copy_(tensor)
            unset.discard(target)
        if unset:
            raise ValueError(f"checkpoint lacks weights: {sorted(unset)[:5]}")

    @torch.no_grad()
    def init_dummy(self, seed: int = 0) -> None:
        """Random weights of the right scale, for benchmarks and reference tests. Drawn at the
        TP=1 shapes in one order and then sliced, so every TP size holds the same model."""
        device = next(self.parameters()).device
        gen = torch.Generator(device=device).manual_seed(seed)
        for name, p in self.named_parameters():
            owner = self.get_submodule(name.rpartition(".")[0])
            shape = owner.full_shape(p) if hasattr(owner, "full_shape") else p.shape
            norm = name.endswith(_NORM_WEIGHTS) or name == "norm.weight"
            t = torch.randn(shape, generator=gen, device=device, dtype=p.dtype)
            t = 1.0 + 0.1 * t if norm else 0.02 * t
            if hasattr(owner, "load_full"):
                owner.load_full(p, t)
            else:
                p.copy_(t)


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
