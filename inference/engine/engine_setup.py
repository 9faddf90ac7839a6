"""What an `LLMEngine` runs on, built once at start-up: the model on its device with its
weights, the KV pool sized for it, the runner and its CUDA graphs (`build_runtime`), and where
the model comes from (`open_model`).

Contract: `build_runtime` returns only when the model is loaded, the pool allocated and every
decode graph captured; with tensor parallelism every rank builds the same pool size (the
smallest any rank can hold). The context it serves (`Runtime.max_model_len`) is never more
than the pool holds: a pool smaller than the model's context lowers the context, with a
warning, so a request the pool could not finish is refused up front rather than cut short.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .config import EngineConfig, ModelConfig
from .distributed import all_reduce_min
from .kv_cache import KVCacheManager
from .model import DecoderLM
from .placement import make_backend, pick_device, pick_dtype, pick_kv_dtype, quantize
from .runner import ModelRunner, kv_bytes_per_block
from .tokenizer import Tokenizer
from .tp_runner import make_runner

LoadWeights = Callable[[DecoderLM], None]

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    device: torch.device
    dtype: torch.dtype
    dtype_reason: str  # why `dtype` (placement.pick_dtype), for the start-up log
    kv_dtype: torch.dtype  # the pool's: the model's, or float8 e4m3
    max_model_len: int  # the context served: the model's, bounded by the pool (module doc)
    kv: KVCacheManager
    runner: ModelRunner
    graph_decoder: Any  # a CudaGraphDecoder, or None (CPU, or enforce_eager)
    kv_plan: Any  # the memory.KVMemoryPlan that sized the pool on CUDA, else None


def build_runtime(model_config: ModelConfig, config: EngineConfig,
                  load_weights: LoadWeights) -> Runtime:
    """`load_weights(model)` fills the freshly built model's parameters."""
    device = pick_device(config)
    dtype, dtype_reason = pick_dtype(config, device)
    kv_dtype = pick_kv_dtype(config, device, dtype)
    max_model_len = min(model_config.max_position, config.max_model_len or 1 << 62)
    backend = make_backend(device, config.block_size)
    with torch.device(device):
        model = DecoderLM(model_config, backend, max_model_len)
    model.to(dtype)
    load_weights(model)
    model.eval()
    quantize(model, config.quantization, device)
    own_blocks, kv_plan = _num_blocks(model, config, device, kv_dtype)
    num_blocks = all_reduce_min(own_blocks, device)
    kv = KVCacheManager(num_blocks, config.block_size, config.enable_prefix_caching)
    max_model_len = _served_context(max_model_len, num_blocks * config.block_size)
    runner = make_runner(  # rank 0 of a TP group sends each step's plan
        model, backend, num_blocks, config.block_size, device, kv_dtype, kv.tables
    )
    graph_decoder = None
    if device.type == "cuda" and not config.enforce_eager:
        from .cuda_graphs import CudaGraphDecoder

        # Mixed graphs are single-GPU: a TP step is not known to replay alike on every rank.
        mixed = config.cuda_graph_max_tokens if config.tensor_parallel_size == 1 else 0
        graph_decoder = CudaGraphDecoder(model, backend, runner.kv_cache, config.max_num_seqs,
                                         max_model_len, config.block_size,
                                         min(mixed, config.max_num_batched_tokens))
        graph_decoder.capture()
        runner.graph_hook = graph_decoder.run
    return Runtime(device, dtype, dtype_reason, kv_dtype, max_model_len, kv, runner,
                   graph_decoder, kv_plan)


def _served_context(max_model_len: int, pool_tokens: int) -> int:
    if pool_tokens >= max_model_len:
        return max_model_len
    log.warning("the KV pool holds %d tokens, fewer than the context of %d: serving a context "
                "of %d (raise num_kv_blocks, kv_cache_memory or gpu_memory_utilization, or "
                "lower max_model_len, to silence this)", pool_tokens, max_model_len, pool_tokens)
    return pool_tokens


def _num_blocks(model: DecoderLM, config: EngineConfig, device: torch.device,
                kv_dtype: torch.dtype) -> tuple[int, Any]:
    """This rank's pool size, and the memory plan behind it (CUDA, unless set by hand)."""
    if config.num_kv_blocks is not None:
        return config.num_kv_blocks, None
    per_block = kv_bytes_per_block(model.config, config.block_size, kv_dtype, model.kv_heads)
    if device.type == "cuda":
        from .memory import plan_kv_pool

        plan = plan_kv_pool(model, config, per_block, kv_dtype)
        return plan.num_blocks, plan
    return max(1, config.kv_cache_memory // per_block), None


def open_model(spec: str | None, config: EngineConfig
               ) -> tuple[ModelConfig, Tokenizer | None, LoadWeights]:
    """The model's config, tokenizer and weight loader for `spec`: None (the default model),
    an HF folder, a GGUF file, or `dummy:<preset>`. `config.load_format == "dummy"` keeps the
    checkpoint's shape and tokenizer and draws random weights; a tensor-parallel rank loads
    only its own slices (`shard_slice`)."""
    if spec is not None and spec.startswith("dummy:"):
        from .presets import preset_config

        return (preset_config(spec.removeprefix("dummy:")), None,
                lambda m: m.init_dummy(config.seed))
    from .loader import load_checkpoint
    from .model_store import resolve_model

    if config.load_format not in ("auto", "dummy"):
        raise ValueError(f"load_format: unknown {config.load_format!r}; use auto or dummy")
    dummy = config.load_format == "dummy"
    ckpt = load_checkpoint(resolve_model(spec), need_weights=not dummy)
    if dummy:  # the checkpoint's shape and tokenizer, random weights
        return ckpt.config, ckpt.tokenizer, lambda m: m.init_dummy(config.seed)
    return ckpt.config, ckpt.tokenizer, lambda m: m.load_weights(ckpt.weights(m.shard_slice))
