"""`EngineConfig.kv_cache_dtype`: "auto" keeps the model's dtype; "fp8" is CUDA only and halves
the bytes of a KV block (so a memory budget holds twice the blocks)."""

from __future__ import annotations

import pytest
import torch

from inference.engine.config import EngineConfig
from inference.engine.placement import pick_kv_dtype
from inference.engine.presets import preset_config
from inference.engine.runner import kv_bytes_per_block


def test_auto_kv_dtype_is_the_model_dtype():
    cfg = EngineConfig()
    assert pick_kv_dtype(cfg, torch.device("cpu"), torch.float32) is torch.float32


def test_fp8_kv_cache_on_cpu_is_a_clear_error():
    with pytest.raises(ValueError, match="kv_cache_dtype: 'fp8' needs CUDA"):
        pick_kv_dtype(EngineConfig(kv_cache_dtype="fp8"), torch.device("cpu"), torch.float32)


def test_unknown_kv_cache_dtype_is_rejected():
    with pytest.raises(ValueError, match="kv_cache_dtype: unknown 'int8'"):
        pick_kv_dtype(EngineConfig(kv_cache_dtype="int8"), torch.device("cuda"), torch.bfloat16)


def test_fp8_block_is_half_a_bf16_block():
    mcfg = preset_config("llama-3.1-8b")
    bf16 = kv_bytes_per_block(mcfg, 16, torch.bfloat16)
    assert kv_bytes_per_block(mcfg, 16, torch.float8_e4m3fn) * 2 == bf16


def test_engine_refuses_fp8_kv_on_cpu_before_loading():
    from inference import LLM

    with pytest.raises(ValueError, match="needs CUDA"):
        LLM("dummy:smollm2-135m", device="cpu", kv_cache_dtype="fp8", num_kv_blocks=8)
