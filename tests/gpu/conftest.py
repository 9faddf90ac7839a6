"""GPU tests: run on CUDA; skipped cleanly elsewhere.

`TRITON_INTERPRET=1` runs the Triton kernel tests on the CPU through Triton's interpreter
(slow, float32/float16 only) — how the kernels are developed without a GPU.
"""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
HAS_CUDA = torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.gpu)


@pytest.fixture
def device() -> str:
    return "cuda" if HAS_CUDA and not INTERPRET else "cpu"
