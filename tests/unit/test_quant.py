"""4-bit weight-only linears: Q4_1-shaped weights come back exactly; the engine option works."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from inference.engine.quant import Int4Linear

from .engine_driver import greedy, run, tiny_engine


def test_q4_1_shaped_weights_are_reproduced_up_to_bf16_rounding():
    gen = torch.Generator().manual_seed(0)
    n, k = 48, 96
    codes = torch.randint(0, 16, (n, k // 32, 32), generator=gen)
    codes[..., 0], codes[..., 1] = 0, 15  # every group spans the full code range, as Q4_1's do
    step = torch.rand(n, k // 32, 1, generator=gen) * 0.02 + 0.005
    lo = torch.randn(n, k // 32, 1, generator=gen) * 0.05
    dense = nn.Linear(k, n, bias=False)
    with torch.no_grad():
        dense.weight.copy_((lo + step * codes).view(n, k))
    x = torch.randn(5, k, generator=gen).bfloat16()
    want = x.float() @ dense.weight.t()
    got = Int4Linear(dense)(x).float()
    assert (got - want).abs().max().item() <= 0.02 * want.abs().max().item()


def test_a_qwen2_qkv_bias_survives_quantization():
    torch.manual_seed(0)
    dense = nn.Linear(64, 32, bias=True)
    no_bias = nn.Linear(64, 32, bias=False)
    no_bias.weight = dense.weight
    x = torch.randn(3, 64)
    with torch.no_grad():
        assert torch.allclose(Int4Linear(dense)(x), Int4Linear(no_bias)(x) + dense.bias)


def test_int4_engine_generates_and_refuses_other_methods():
    engine = tiny_engine(dtype="bfloat16", quantization="int4")
    got = run(engine, [(0, list(range(3, 20)), greedy(6))])
    assert len(got["r0"][0]) == 6
    with pytest.raises(ValueError, match="quantization"):
        tiny_engine(quantization="fp3")
