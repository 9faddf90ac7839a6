"""Every engine setting reaches a served worker: `WorkerConfig` holds the engine's
`EngineConfig`, and each of its fields is a worker flag and a `KVMESH_WORKER_*` variable."""

from __future__ import annotations

import dataclasses

import pytest

from inference.engine.config import EngineConfig
from inference.worker_config import WorkerConfig
from kvmesh.config import ConfigError, load

# A value other than the default for every engine field, as a flag/variable would spell it.
SETTINGS = {
    "block_size": ("32", 32), "num_kv_blocks": ("123", 123),
    "kv_cache_memory": ("1048576", 1 << 20), "gpu_memory_utilization": ("0.5", 0.5),
    "max_num_batched_tokens": ("16384", 16384), "max_num_seqs": ("7", 7),
    "max_model_len": ("512", 512), "enable_prefix_caching": ("false", False),
    "device": ("cpu", "cpu"), "dtype": ("float32", "float32"), "enforce_eager": ("1", True),
    "cuda_graph_max_tokens": ("256", 256),
    "quantization": ("int4", "int4"), "kv_cache_dtype": ("fp8", "fp8"),
    "load_format": ("dummy", "dummy"), "seed": ("9", 9), "async_scheduling": ("false", False),
    "pooling": ("mean", "mean"), "normalize_embeddings": ("false", False),
    "tensor_parallel_size": ("2", 2),
}


def test_the_table_names_every_engine_field() -> None:
    assert set(SETTINGS) == {f.name for f in dataclasses.fields(EngineConfig)}


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_an_engine_setting_reaches_the_worker_from_its_flag(name: str) -> None:
    raw, want = SETTINGS[name]
    cfg = load(WorkerConfig, ["--" + name.replace("_", "-"), raw], env={})
    assert getattr(cfg.engine, name) == want


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_an_engine_setting_reaches_the_worker_from_its_variable(name: str) -> None:
    raw, want = SETTINGS[name]
    cfg = load(WorkerConfig, [], env={f"KVMESH_WORKER_{name.upper()}": raw})
    assert getattr(cfg.engine, name) == want
    shared = load(WorkerConfig, [], env={f"KVMESH_{name.upper()}": raw})
    assert getattr(shared.engine, name) == want


def test_the_flag_wins_over_the_variable_and_a_bad_value_names_its_source() -> None:
    cfg = load(WorkerConfig, ["--block-size", "64"], env={"KVMESH_WORKER_BLOCK_SIZE": "32"})
    assert cfg.engine.block_size == 64
    with pytest.raises(ConfigError, match="KVMESH_WORKER_MAX_NUM_BATCHED_TOKENS"):
        load(WorkerConfig, [], env={"KVMESH_WORKER_MAX_NUM_BATCHED_TOKENS": "lots"})
