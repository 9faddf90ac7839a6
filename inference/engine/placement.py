"""Where and in what form the engine runs: device, model and KV dtypes, the attention backend
for the device, and optional weight quantization. Every choice is validated here, so a bad
setting fails at start-up with a message naming the field."""

from __future__ import annotations

import torch

from .attention import AttentionBackend
from .config import EngineConfig
from .cpu_features import this_cpu_bf16_flag
from .distributed import tp_rank
from .model import DecoderLM
from .torch_attention import TorchAttentionBackend


def pick_device(cfg: EngineConfig, rank: int | None = None) -> torch.device:
    """The engine's device; a tensor-parallel rank (`rank`, default this process's) on CUDA
    gets `cuda:<rank>`."""
    name = cfg.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and cfg.tensor_parallel_size > 1:
        device = torch.device("cuda", tp_rank() if rank is None else rank)
    return device


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_dtype(cfg: EngineConfig, device: torch.device) -> tuple[torch.dtype, str]:
    """The model's dtype on `device`, and why it was chosen (for the start-up log). "auto":
    bfloat16 on CUDA, and on a CPU with native bf16 dot products (cpu_features.py), where it
    runs about twice as fast as float32; float32 on a CPU that would emulate bf16, and on
    any other device."""
    if cfg.dtype in DTYPES:
        return DTYPES[cfg.dtype], "set by dtype"
    if cfg.dtype != "auto":
        raise ValueError(f"dtype: unknown {cfg.dtype!r}; use auto, {', '.join(DTYPES)}")
    if device.type == "cuda":
        return torch.bfloat16, "the default on CUDA"
    if device.type != "cpu":
        return torch.float32, f"the default on {device.type}"
    flag = this_cpu_bf16_flag()
    if flag is None:
        return torch.float32, "the CPU has no native bfloat16 dot products"
    return torch.bfloat16, f"the CPU has {flag}"


def pick_kv_dtype(cfg: EngineConfig, device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """The KV pool's dtype: the model's ("auto"), or float8 e4m3 ("fp8", CUDA only)."""
    if cfg.kv_cache_dtype == "auto":
        return dtype
    if cfg.kv_cache_dtype == "fp8":
        if device.type != "cuda":
            raise ValueError(
                f"kv_cache_dtype: 'fp8' needs CUDA (device is {device.type}); use 'auto'"
            )
        return torch.float8_e4m3fn
    raise ValueError(f"kv_cache_dtype: unknown {cfg.kv_cache_dtype!r}; use auto or fp8")


def make_backend(device: torch.device, block_size: int) -> AttentionBackend:
    if device.type == "cuda":
        from .triton_attention import TritonAttentionBackend

        return TritonAttentionBackend(block_size)
    return TorchAttentionBackend(block_size)


def quantize(model: DecoderLM, method: str | None, device: torch.device) -> None:
    if method is None:
        return
    if method != "int4" or device.type != "cpu":
        raise ValueError(
            f"quantization: {method!r} is not supported on {device.type}; use int4 on cpu"
        )
    from .quant import quantize_int4

    quantize_int4(model)
