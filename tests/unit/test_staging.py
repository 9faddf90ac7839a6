"""`transfer.Staging`: a step's small host arrays reach the device in one copy, each part in
its own dtype, 16-byte aligned, and what one send returned stays intact through later sends
(the pinned buffers are reused on CUDA: tests/gpu/test_staging_gpu.py runs the same there)."""

from __future__ import annotations

import numpy as np
import torch

from inference.engine.transfer import I32, I64, Staging


def check_sends(device: torch.device) -> None:
    staging = Staging(device)
    rng = np.random.default_rng(0)
    kept = []
    for n in [1, 3, 0, 17, 256, 5, 4096, 2, 40000, 7]:  # sizes that grow and shrink
        parts = [(rng.integers(-2**40, 2**40, n).tolist(), I64),
                 (rng.integers(-2**31, 2**31 - 1, n + 1, dtype=np.int64), I32),
                 ([], I64),
                 (rng.integers(0, 2**20, (n % 5 + 1) * 3).astype(np.int32), I32)]
        got = staging.send(parts)
        assert [t.device.type for t in got] == [device.type] * len(parts)
        for t, (_, dtype) in zip(got, parts, strict=True):
            assert t.dtype == (torch.int64 if dtype == I64 else torch.int32)
            assert t.storage_offset() * t.element_size() % 16 == 0
        kept.append((got, parts))
    for got, parts in kept:  # every send's tensors, read after all the sends
        for t, (values, _) in zip(got, parts, strict=True):
            assert t.tolist() == list(np.asarray(values, dtype=np.int64).tolist())


def test_parts_land_aligned_in_their_dtypes_and_stay_intact_on_the_cpu():
    check_sends(torch.device("cpu"))
