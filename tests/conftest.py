"""Fixtures shared by every test suite."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def smollm_gguf() -> Path:
    """Path of the default model's GGUF; skips when it is not cached (`kvmesh models pull`)."""
    from inference.engine.model_store import ModelNotFoundError, resolve_model

    try:
        return resolve_model(None)
    except ModelNotFoundError as e:
        pytest.skip(f"default model not cached ({e})")


TINY_LLAMA = {"model_type": "llama", "vocab_size": 49152, "hidden_size": 64,
              "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "max_position_embeddings": 512,
              "tie_word_embeddings": True}


@pytest.fixture(scope="session")
def shaped(smollm_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An HF folder of a tiny Llama config (`TINY_LLAMA`) beside the default model's tokenizer
    (exported from its GGUF): served with `load_format="dummy"`, a real tokenizer on random
    weights, fast on a CPU."""
    import json

    from inference.engine.loader import load_checkpoint

    folder = tmp_path_factory.mktemp("shaped")
    tok = load_checkpoint(smollm_gguf, need_weights=False).tokenizer
    assert tok is not None
    tok.save_hf_folder(folder)
    (folder / "config.json").write_text(json.dumps(TINY_LLAMA))
    return folder
