"""`allowed_token_ids` (vLLM's): a row may draw only the tokens its request names.

Every other token of such a row gets a -inf logit before sampling (and before logprobs, which
are of the masked distribution, as a grammar's are). Hot path, once per step: only rows that
asked for it are touched; the (row, token) pairs of all of them cross to the device in one
copy, their logits are kept aside, the rows are filled with -inf, and the kept logits put
back: three device operations for the whole batch, whatever the rows' vocabulary.
"""

from __future__ import annotations

import numpy as np
import torch

from .sampling_params import SamplingParams
from .transfer import to_device


def _ids(params: SamplingParams) -> np.ndarray:
    """The request's allowed ids as an int64 array, built on its first step and kept on its
    params (every choice of the request shares them)."""
    ids = params.__dict__.get("_allowed_ids")
    if ids is None:
        allowed = sorted(set(params.allowed_token_ids or ()))
        ids = params.__dict__["_allowed_ids"] = np.asarray(allowed, np.int64)
    return ids


@torch.inference_mode()  # the runner's logits are inference tensors: written in place here
def keep_allowed(logits: torch.Tensor, params: list[SamplingParams], rows: list[int]) -> None:
    """For each `rows[j]` (whose request is `params[j]`, with `allowed_token_ids`), set every
    logit outside its allowed ids to -inf, in place. Ids were checked against the vocabulary
    when the request was added."""
    ids = [_ids(p) for p in params]
    index_rows = np.repeat(np.asarray(rows, np.int64), [len(a) for a in ids])
    index = to_device(np.stack([index_rows, np.concatenate(ids)]), torch.long, logits.device)
    kept = logits[index[0], index[1]]
    logits[to_device(rows, torch.long, logits.device)] = float("-inf")
    logits[index[0], index[1]] = kept
