"""Sampling: seeds reproduce across batch compositions; top-k / top-p / min-p stay in their
sets."""

from __future__ import annotations

import pytest
import torch

from inference.engine.sampler import SampleRow, sample
from inference.engine.sampling_params import SamplingParams

from .engine_driver import run, tiny_engine


def _rows(n: int, **kw) -> list[SampleRow]:
    return [SampleRow(SamplingParams(**kw), None) for _ in range(n)]


def draw(logits: torch.Tensor, rows: list[SampleRow], gen: torch.Generator):
    drawn = sample(logits, rows, gen)
    return drawn.read(drawn.tensors())


def test_top_k_never_samples_outside_the_k_most_likely():
    logits = torch.randn(64, 300, generator=torch.Generator().manual_seed(0))
    allowed = logits.topk(5, dim=-1).indices
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        tokens, _ = draw(logits, _rows(64, top_k=5, temperature=2.0), gen)
        assert all(t in allowed[i].tolist() for i, t in enumerate(tokens))


def test_top_p_never_samples_outside_the_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.1, 0.06, 0.04]]).repeat(32, 1)
    logits = probs.log()
    gen = torch.Generator().manual_seed(2)
    seen = set()
    for _ in range(50):
        tokens, _ = draw(logits, _rows(32, top_p=0.75), gen)
        seen.update(tokens)
    assert seen == {0, 1}, "0.5 + 0.3 reaches 0.75: exactly the first two tokens"


def test_min_p_drops_tokens_below_its_share_of_the_likeliest():
    probs = torch.tensor([[0.5, 0.3, 0.1, 0.06, 0.04]]).repeat(32, 1)
    gen = torch.Generator().manual_seed(2)
    seen, plain = set(), set()
    for _ in range(50):
        seen.update(draw(probs.log(), _rows(32, min_p=0.25), gen)[0])  # floor 0.125
        plain.update(draw(probs.log(), _rows(32), gen)[0])
    assert seen == {0, 1} and plain == {0, 1, 2, 3, 4}
    # after temperature: at 0.5 the probabilities go as p^2 (0.70, 0.25, ...), and 0.25 is
    # below 0.4 x 0.70, where at temperature 1, 0.3 is above 0.4 x 0.5
    sharp, warm = set(), set()
    for _ in range(50):
        sharp.update(draw(probs.log(), _rows(32, min_p=0.4, temperature=0.5), gen)[0])
        warm.update(draw(probs.log(), _rows(32, min_p=0.4), gen)[0])
    assert sharp == {0} and warm == {0, 1}


def test_a_temperature_too_small_to_divide_by_is_greedy():
    """1e-40 would overflow the logits it divides (empty or special tokens came out)."""
    assert SamplingParams(temperature=1e-40).greedy and SamplingParams(temperature=1e-6).greedy
    assert not SamplingParams(temperature=1e-4).greedy
    logits = torch.randn(8, 50, generator=torch.Generator().manual_seed(4)) * 30
    tokens, _ = draw(logits, _rows(8, temperature=1e-40, min_p=0.5), torch.Generator())
    assert tokens == logits.argmax(dim=-1).tolist()


def test_sampling_follows_the_distribution():
    logits = torch.tensor([[0.0, 1.0, 2.0]]).repeat(4000, 1)
    tokens, _ = draw(logits, _rows(4000), torch.Generator().manual_seed(3))
    freq = torch.bincount(torch.tensor(tokens), minlength=3).float() / 4000
    assert torch.allclose(freq, logits[0].softmax(-1), atol=0.03)


def test_greedy_and_logprobs_with_top_alternatives():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    tokens, lps = draw(logits, _rows(1, temperature=0.0, logprobs=2), torch.Generator())
    assert tokens == [1]
    ref = logits.log_softmax(-1)[0]
    assert lps[0].logprob == pytest.approx(ref[1].item())
    assert [t for t, _ in lps[0].top] == [1, 2]


def test_same_seed_same_output_whatever_else_is_in_the_batch():
    prompt = list(range(20, 35))
    seeded = SamplingParams(max_tokens=10, temperature=1.0, seed=1234, ignore_eos=True)
    alone = run(tiny_engine(), [(0, prompt, seeded)])["r0"]
    noise = [
        (
            s,
            list(range(40 + s, 60 + s)),
            SamplingParams(max_tokens=8, temperature=1.0, ignore_eos=True),
        )
        for s in range(4)
    ]
    crowded = run(tiny_engine(), [*noise, (2, prompt, seeded)])["r4"]
    assert alone == crowded
    other = SamplingParams(max_tokens=10, temperature=1.0, seed=99, ignore_eos=True)
    assert run(tiny_engine(), [(0, prompt, other)])["r0"] != alone


def test_seeded_choices_differ_from_each_other():
    params = SamplingParams(max_tokens=10, temperature=1.0, seed=5, n=3, ignore_eos=True)
    got = run(tiny_engine(), [(0, list(range(20, 35)), params)])["r0"]
    assert len({tuple(v) for v in got.values()}) == 3
