"""`min_tokens` (vLLM's): a choice cannot end before it has generated that many tokens.

While a sequence has generated fewer than its `min_tokens`, the tokens that would end it with
"stop" (`request_state.hidden_ids`: its `stop_token_ids`, and the end-of-sequence ids unless
`ignore_eos`) get a -inf logit before sampling, so it can neither draw nor report them; its stop
strings are not looked for in the text of those tokens either (`ChoiceState.on_token`). It can
still end with "length" at its context's end. A grammar decides on its own when an answer ends,
so `min_tokens` with one is refused (`SamplingParams`).

Hot path, once per step: only rows that asked for `min_tokens` are looked at; the (row, token)
pairs of those still short of it cross to the device in one copy and land in one `index_put_`.
A sequence's generated count includes its token in flight (inflight.py), so the count is right
in the overlapped loop too.
"""

from __future__ import annotations

from collections.abc import Sequence as PySequence
from typing import Protocol

import numpy as np
import torch

from .request_state import hidden_ids
from .sampling_params import SamplingParams
from .transfer import to_device


class CountedRow(Protocol):
    """A row whose generated tokens are known: an engine `Sequence`."""

    params: SamplingParams
    num_output_tokens: int


def _ending_ids(params: SamplingParams, eos_ids: frozenset[int]) -> np.ndarray:
    """The request's ending token ids as an int64 array, built on its first masked step and
    kept on its params (every choice of the request shares them)."""
    ids = params.__dict__.get("_ending_ids")
    if ids is None:
        hidden = hidden_ids(params, eos_ids)
        ids = params.__dict__["_ending_ids"] = np.fromiter(hidden, np.int64, len(hidden))
    return ids


@torch.inference_mode()  # the runner's logits are inference tensors: written in place here
def forbid_endings(logits: torch.Tensor, rows: PySequence[CountedRow], indices: list[int],
                   eos_ids: frozenset[int]) -> None:
    """Set `logits[i, t] = -inf` for each row `rows[j]` (logits row `indices[j]`) that has
    generated fewer than its `min_tokens`, for every token `t` that would end it."""
    short = [(i, _ending_ids(r.params, eos_ids)) for i, r in zip(indices, rows, strict=True)
             if r.num_output_tokens < r.params.min_tokens]
    short = [(i, ids) for i, ids in short if len(ids)]
    if not short:
        return
    index_rows = np.repeat(np.fromiter((i for i, _ in short), np.int64, len(short)),
                           [len(ids) for _, ids in short])
    index = to_device(np.stack([index_rows, np.concatenate([ids for _, ids in short])]),
                      torch.long, logits.device)
    logits[index[0], index[1]] = float("-inf")
