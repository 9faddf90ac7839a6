"""How many splits a decode step's attention uses, and so which decode graphs are captured.

Split-K decode attention (`triton_kernels/decode_attention.py`) runs `(sequences, KV heads,
splits)` programs and, with more than one split, a second kernel that merges them. Splitting
spreads a long context over the GPU; at a short one the merge's launch costs more than the
split saves. bench/decode_splits.py measures where this turns: on an H100, one split was no
slower up to 256 tokens at every batch that splits, for SmolLM2's heads and the 8B's (batch
1 at 128 tokens: 2.7 against 4.4 µs for SmolLM2, 3.5 against 6.0 for the 8B), and slower from
384 or 512 on at most batches (batch 1 at 512: 6.2 against 4.7, 9.0 against 6.3).

A CUDA graph fixes the launch, so the graph decoder captures a decode graph per span, the
longest context it holds (`decode_spans`), and a step replays the shortest span that holds
its longest context. Pure Python: the graph planner and the CPU tests read it without triton.
"""

from __future__ import annotations

import math

# Contexts of at most this many tokens attend in one split: each program walks its whole
# context and writes the output itself; no merge kernel runs.
ONE_SPLIT_SPAN = 256
MAX_SPLITS = 64


def decode_block_n(head_dim: int) -> int:
    """Tokens per tile that the split count is sized by."""
    return 64 if head_dim <= 128 else 32


def decode_num_splits(num_seqs: int, kv_heads: int, max_seq_len: int, head_dim: int,
                      num_sms: int = 132) -> int:
    """One split for a context of at most `ONE_SPLIT_SPAN`; else about two programs per
    multiprocessor, never more than there are tiles in `max_seq_len`. Depends only on its
    arguments: a graph captured with `max_seq_len` set to its span launches alike on every
    replay."""
    if max_seq_len <= ONE_SPLIT_SPAN:
        return 1
    tiles = max(1, math.ceil(max_seq_len / decode_block_n(head_dim)))
    want = math.ceil(2 * num_sms / max(1, num_seqs * kv_heads))
    return max(1, min(tiles, want, MAX_SPLITS))


def decode_spans(num_seqs: int, kv_heads: int, head_dim: int, max_model_len: int,
                 num_sms: int = 132) -> tuple[int, ...]:
    """The spans to capture a decode graph of `num_seqs` rows for, ascending, the last
    `max_model_len`: a short span only where its launch differs (fewer splits, no merge)."""
    short = min(ONE_SPLIT_SPAN, max_model_len)
    splits = decode_num_splits(num_seqs, kv_heads, max_model_len, head_dim, num_sms)
    if short == max_model_len or splits == 1:
        return (max_model_len,)
    return (short, max_model_len)
