"""The fused sampling kernel: the distribution it draws, greedy rows, masks, seeds, and the
sampler's CUDA path through it. Runs on CUDA, or on the CPU under `TRITON_INTERPRET=1`."""

from __future__ import annotations

import os

import pytest
import torch

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
if not torch.cuda.is_available() and not INTERPRET:
    pytest.skip("needs CUDA (or TRITON_INTERPRET=1)", allow_module_level=True)
pytest.importorskip("triton")

from inference.engine.sampler import SampleRow, sample  # noqa: E402
from inference.engine.sampling_params import SamplingParams  # noqa: E402
from inference.engine.triton_kernels.gumbel_sample import BLOCK_V, gumbel_sample  # noqa: E402


def freq(tokens: torch.Tensor, vocab: int) -> torch.Tensor:
    return torch.bincount(tokens.cpu(), minlength=vocab).float() / tokens.numel()


@pytest.mark.parametrize("temp", [1.0, 0.5, 2.0])
def test_draws_follow_softmax_of_logits_over_temperature(temp, device):
    rows = 3000
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0, 0.5]], device=device).repeat(rows, 1)
    temps = torch.full((rows,), temp, device=device)
    got = freq(gumbel_sample(logits, temps, seed=11), 5)
    assert torch.allclose(got, (logits[0].cpu() / temp).softmax(-1), atol=0.03)


def test_greedy_rows_take_the_argmax_and_ties_the_lowest_id(device):
    gen = torch.Generator().manual_seed(0)
    vocab = BLOCK_V * 2 + 77  # several tiles, the last one partial
    logits = torch.randn(6, vocab, generator=gen)
    logits[1, [5, BLOCK_V + 3, 2 * BLOCK_V + 1]] = 50.0  # a three-way tie across tiles
    temps = torch.tensor([0.0, 0.0, 0.7, 0.0, 1.3, 0.0])
    out = gumbel_sample(logits.to(device), temps.to(device), seed=3).cpu()
    greedy = temps == 0
    assert torch.equal(out[greedy], logits.argmax(-1)[greedy])
    assert out[1].item() == 5


def test_masked_tokens_are_never_drawn(device):
    vocab = BLOCK_V + 500
    logits = torch.full((400, vocab), float("-inf"))
    allowed = [7, BLOCK_V + 1, vocab - 1]
    logits[:, allowed] = torch.tensor([0.0, 0.3, -0.2])
    out = gumbel_sample(logits.to(device), torch.full((400,), 1.0, device=device), seed=5)
    got = freq(out, vocab)
    assert set(torch.nonzero(got).flatten().tolist()) == set(allowed)
    assert torch.allclose(got[allowed], logits[0, allowed].softmax(-1), atol=0.08)


def test_same_seed_same_tokens_another_seed_others(device):
    logits = torch.zeros(64, 1000, device=device)  # uniform: every draw is the noise's
    temps = torch.ones(64, device=device)
    a = gumbel_sample(logits, temps, seed=123)
    assert torch.equal(a, gumbel_sample(logits, temps, seed=123))
    assert not torch.equal(a, gumbel_sample(logits, temps, seed=124))
    assert len(set(a.tolist())) > 32, "rows of one call draw independently"


@pytest.mark.skipif(not torch.cuda.is_available() or INTERPRET, reason="the CUDA sampler")
def test_sampler_on_cuda_draws_through_the_kernel_reproducibly():
    logits = torch.tensor([[0.0, 1.0, 2.0]], device="cuda").repeat(4000, 1)
    rows = [SampleRow(SamplingParams(temperature=1.0), None) for _ in range(4000)]

    def draw(seed: int) -> list[int]:
        gen = torch.Generator(device="cuda").manual_seed(seed)
        first = sample(logits.clone(), rows, gen).tokens
        assert gen.get_offset() == 4, "the fused path advances the engine's generator"
        return first.tolist()

    tokens = draw(1)
    assert tokens == draw(1)
    assert tokens != draw(2)
    got = torch.bincount(torch.tensor(tokens), minlength=3).float() / 4000
    assert torch.allclose(got, logits[0].cpu().softmax(-1), atol=0.03)


@pytest.mark.skipif(not torch.cuda.is_available() or INTERPRET, reason="the CUDA sampler")
def test_an_all_greedy_batch_takes_the_argmax_through_the_kernel_and_draws_no_seed():
    torch.manual_seed(0)
    logits = torch.randn(3, 128_256, device="cuda")
    logits[1, 77_000] = logits[1, 90_000] = logits[1].max() + 1.0  # a tie across splits
    rows = [SampleRow(SamplingParams(temperature=0.0), None) for _ in range(3)]
    gen = torch.Generator(device="cuda").manual_seed(5)
    tokens = sample(logits.clone(), rows, gen).tokens
    assert torch.equal(tokens, logits.argmax(-1)) and tokens[1].item() == 77_000
    assert gen.get_offset() == 0, "a greedy batch must not advance the engine's generator"


@pytest.mark.skipif(not torch.cuda.is_available() or INTERPRET, reason="the CUDA sampler")
@pytest.mark.parametrize("extra", [-1, 0, 40])
def test_an_all_greedy_batch_of_a_row_per_sm_or_more_takes_torchs_argmax(extra, monkeypatch):
    """From as many rows as the GPU has SMs, an all-greedy batch skips the kernel (argmax fills
    the GPU in one launch); below, it goes through the kernel. Same tokens either way, ties
    to the lowest id, a row masked to -inf but one token takes that token."""
    import inference.engine.triton_kernels.gumbel_sample as fused_module

    n = fused_module.num_sms(torch.device("cuda")) + extra
    calls = []
    kernel = fused_module.gumbel_sample
    monkeypatch.setattr(fused_module, "gumbel_sample",
                        lambda *a: calls.append(1) or kernel(*a))
    torch.manual_seed(0)
    logits = torch.randn(n, 49_152, device="cuda")
    logits[1, 3_000] = logits[1, 40_000] = logits[1].max() + 1.0
    logits[2] = float("-inf")
    logits[2, 12_345] = 0.0
    rows = [SampleRow(SamplingParams(temperature=0.0), None) for _ in range(n)]
    tokens = sample(logits.clone(), rows, torch.Generator(device="cuda")).tokens
    assert torch.equal(tokens, logits.argmax(-1))
    assert tokens[1].item() == 3_000 and tokens[2].item() == 12_345
    assert calls == ([1] if extra < 0 else [])
