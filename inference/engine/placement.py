"""Where and in what form the engine runs: device, model and KV dtypes, the attention backend
for the device, and optional weight quantization. Every choice is validated here, so a bad
setting fails at start-up with a message naming the field."""

from __future__ import annotations

import torch

from .attention import AttentionBackend
from .config import EngineConfig
from .distributed import tp_rank
from .model import DecoderLM
from .torch_attention import TorchAttentionBackend


def pick_device(cfg: EngineConfig, rank: int | None = None) -> tuple[torch.device, torch.dtype]:
    """The device and model dtype; a tensor-parallel rank (`rank`, default this process's)
    on CUDA gets `cuda:<rank>`."""
    name = cfg.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and cfg.tensor_parallel_size > 1:
        device = torch.device("cuda", tp_rank() if rank is None else rank)
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if cfg.dtype == "auto":
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    elif cfg.dtype in dtypes:
        dtype = dtypes[cfg.dtype]
    else:
        raise ValueError(f"dtype: unknown {cfg.dtype!r}; use auto, {', '.join(dtypes)}")
    return device, dtype


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
