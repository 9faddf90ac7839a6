"""Penalties on CUDA: the same logits as on the CPU step after step, the counts kept on the
device (the overlapped loop's comparison with the plain loop, penalties included, is
test_async_scheduling_gpu.py's)."""

from __future__ import annotations

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs CUDA", allow_module_level=True)

from inference.engine.penalties import Penalties
from inference.engine.sampler import sample
from inference.engine.sampling_params import SamplingParams
from inference.engine.sequence import Sequence, SequenceStatus

VOCAB = 1000


def _rows() -> list[Sequence]:
    kinds = [dict(frequency_penalty=0.5, presence_penalty=0.25), dict(repetition_penalty=1.4),
             {}, dict(frequency_penalty=-1.0, repetition_penalty=0.8)]
    return [Sequence(i, f"r{i}", 0, [i, 7, 9], 3, SamplingParams(temperature=0.0, **kw), 0.0,
                     status=SequenceStatus.RUNNING)
            for i, kw in enumerate(kinds)]


def test_penalties_on_cuda_equal_penalties_on_cpu():
    gen = torch.Generator().manual_seed(0)
    cpu = Penalties(VOCAB, torch.device("cpu"), cap=8)
    gpu = Penalties(VOCAB, torch.device("cuda"), cap=8)
    rows_cpu, rows_gpu = _rows(), _rows()
    for _ in range(8):
        logits = torch.randn(4, VOCAB, generator=gen) * 3
        on_gpu = logits.cuda()
        a = sample(logits, rows_cpu, torch.Generator(), penalties=cpu)
        b = sample(on_gpu, rows_gpu, torch.Generator("cuda"), penalties=gpu)
        assert torch.allclose(on_gpu.cpu(), logits, atol=1e-5)
        assert b.tokens.cpu().tolist() == a.tokens.tolist()
    assert torch.equal(gpu.counts.cpu()[:4], cpu.counts[:4])
