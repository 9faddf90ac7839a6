"""`transfer.Staging` on CUDA: the pinned buffers are reused in turn, and every send's
tensors still hold their own values after later sends (tests/unit/test_staging.py)."""

from __future__ import annotations

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs CUDA", allow_module_level=True)

from tests.unit.test_staging import check_sends


def test_parts_land_aligned_in_their_dtypes_and_stay_intact_on_cuda():
    check_sends(torch.device("cuda"))


def test_a_reused_buffer_is_not_written_before_its_copy_left():
    """A slow kernel ahead of the copies in the stream: the third send reuses the first
    send's pinned buffer while its copy may still wait behind that kernel."""
    from inference.engine.transfer import I64, Staging

    staging = Staging(torch.device("cuda"), buffers=2)
    big = torch.randn(4096, 4096, device="cuda")
    for _ in range(20):
        big = big @ big  # keeps the stream busy for a while
        big /= big.norm()
    sent = [staging.send([([i] * 1000, I64)])[0] for i in range(5)]
    assert [t.unique().tolist() for t in sent] == [[i] for i in range(5)]
