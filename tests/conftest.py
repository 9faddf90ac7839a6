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
