"""Sampling in one pass over the logits: temperature, noise and argmax fused (Gumbel-max).

`argmax(logits / T + G)` with `G = -log(-log U)`, `U` uniform, draws a token with
probability `softmax(logits / T)`: the same distribution as the sampler's exponential race
(`argmax(p / E)`, `E = -log U`, whose logarithm is this score). A row with `T == 0` takes the
plain argmax. Each row is read once, its noise drawn on the fly (Philox,
`tl.rand`), where the unfused path writes and reads the whole `[rows, vocab]` array five
times or more (scale, softmax, noise, divide, argmax) in as many launches. A row's vocabulary
is split over several programs when the batch is small, and a second kernel keeps each row's
best split.

Noise is a function of `(seed, row, token)` only: the same seed gives the same tokens.
Ties go to the lowest token id, as `torch.argmax` does. Tokens at -inf (masked by a grammar or
a logit bias) are never drawn unless every token of the row is (then token 0). `seed` is below
2**31, so the kernel compiles for one integer type.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

BLOCK_V = 2048
PROGRAMS_PER_SM = 4  # enough programs in flight that the noise's arithmetic hides the loads


# Integers that change between calls are not specialised on (Triton compiles apart for a value
# of 1 and for multiples of 16): one compile, none mid-run for a new seed or split count.
@triton.jit(do_not_specialize=["seed", "tiles_per_split", "num_splits"])
def _gumbel_partial_kernel(
    Logits, Temps, PartScore, PartId, stride_row, vocab, seed, tiles_per_split, num_splits,
    BLOCK_V: tl.constexpr,
):
    """The best score and its token over one split of one row's vocabulary."""
    row = tl.program_id(0)
    split = tl.program_id(1)
    temp = tl.load(Temps + row)
    greedy = temp == 0.0
    inv_t = 1.0 / tl.where(greedy, 1.0, temp)
    start = split * tiles_per_split * BLOCK_V
    best = tl.full([BLOCK_V], float("-inf"), tl.float32)
    best_id = start + tl.arange(0, BLOCK_V)  # a row all at -inf ends on token 0
    base = Logits + row.to(tl.int64) * stride_row
    for t in range(0, tiles_per_split):
        cols = start + t * BLOCK_V + tl.arange(0, BLOCK_V)
        inside = cols < vocab
        logit = tl.load(base + cols, mask=inside, other=float("-inf")).to(tl.float32)
        u = tl.rand(seed, row * vocab + cols)  # [0, 1): u == 0 gives -inf noise, never drawn
        noise = -tl.log(-tl.log(u))
        score = tl.where(greedy, logit, logit * inv_t + noise)
        score = tl.where(inside, score, float("-inf"))
        better = score > best  # strict: an earlier column keeps a tie within its lane
        best = tl.where(better, score, best)
        best_id = tl.where(better, cols, best_id)
    top = tl.max(best, 0)
    token = tl.min(tl.where(best == top, best_id, 2147483647), 0)
    tl.store(PartScore + row * num_splits + split, top)
    tl.store(PartId + row * num_splits + split, token)


@triton.jit(do_not_specialize=["num_splits"])
def _gumbel_reduce_kernel(PartScore, PartId, Out, num_splits, BLOCK_S: tl.constexpr):
    """Each row's token: the best of its splits, the lowest token among equals."""
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK_S)
    inside = offs < num_splits
    score = tl.load(PartScore + row * num_splits + offs, mask=inside, other=float("-inf"))
    ids = tl.load(PartId + row * num_splits + offs, mask=inside, other=2147483647)
    top = tl.max(score, 0)
    tl.store(Out + row, tl.min(tl.where(score == top, ids, 2147483647), 0).to(tl.int64))


def gumbel_sample(logits: torch.Tensor, temperatures: torch.Tensor, seed: int) -> torch.Tensor:
    """Tokens `[rows]` (int64) for `logits` `[rows, vocab]` and per-row `temperatures`
    (float32, 0 for greedy), on the logits' device; queues device work only (two kernels: a
    row's vocabulary is split over programs so that a small batch still fills the GPU)."""
    rows, vocab = logits.shape
    if rows * vocab >= 2**31:
        raise ValueError(f"{rows} rows of {vocab} logits: noise offsets must fit in int32")
    assert logits.stride(1) == 1
    out = torch.empty(rows, dtype=torch.long, device=logits.device)
    if not rows:
        return out
    tiles = triton.cdiv(vocab, BLOCK_V)
    want = triton.cdiv(PROGRAMS_PER_SM * num_sms(logits.device), rows)
    tiles_per_split = triton.cdiv(tiles, max(1, min(tiles, want)))
    splits = triton.cdiv(tiles, tiles_per_split)  # none empty
    part_score = torch.empty(rows, splits, dtype=torch.float32, device=logits.device)
    part_id = torch.empty(rows, splits, dtype=torch.int32, device=logits.device)
    _gumbel_partial_kernel[(rows, splits)](
        logits, temperatures, part_score, part_id, logits.stride(0), vocab, seed,
        tiles_per_split, splits, BLOCK_V=BLOCK_V, num_warps=8)
    _gumbel_reduce_kernel[(rows,)](part_score, part_id, out, splits,
                                   BLOCK_S=max(2, triton.next_power_of_2(splits)))
    return out


@functools.cache  # a device query: once, not on every step's sampling
def num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 4  # the interpreter (tests): a few splits, so the reduction is exercised
    return torch.cuda.get_device_properties(device).multi_processor_count
