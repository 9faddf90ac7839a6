"""`logit_bias`: add each request's per-token biases to its row of logits, for the whole batch
at once.

Hot path, once per step: the (row, token, bias) triples of every biased row are gathered with
numpy from arrays each request built once (`BiasArrays`), cross to the device in one copy each,
and land in one `index_put_`; no Python loop over tokens, and nothing at all when no row of
the batch is biased.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .sampling_params import SamplingParams
from .transfer import to_device


@dataclass(frozen=True)
class BiasArrays:
    """A request's `logit_bias` as two aligned arrays: token ids and biases."""

    ids: np.ndarray  # int64
    values: np.ndarray  # float32

    @classmethod
    def of(cls, bias: dict[int, float]) -> BiasArrays:
        return cls(np.fromiter(bias.keys(), np.int64, len(bias)),
                   np.fromiter(bias.values(), np.float32, len(bias)))


def _arrays(params: SamplingParams) -> BiasArrays:
    """The request's arrays, built on its first step and kept on its params (every choice of
    the request shares them)."""
    arrays = params.__dict__.get("_bias_arrays")
    if arrays is None:
        arrays = params.__dict__["_bias_arrays"] = BiasArrays.of(params.logit_bias)
    return arrays


@torch.inference_mode()  # the runner's logits are inference tensors: written in place here
def apply_logit_bias(logits: torch.Tensor, params: list[SamplingParams]) -> None:
    """`logits[i, t] += params[i].logit_bias[t]` for every row and biased token, in place.
    Token ids were checked against the vocabulary when the request was added."""
    biased = [(i, _arrays(p)) for i, p in enumerate(params) if p.logit_bias]
    if not biased:
        return
    rows = np.repeat(np.fromiter((i for i, _ in biased), np.int64, len(biased)),
                     [len(a.ids) for _, a in biased])
    index = to_device(np.stack([rows, np.concatenate([a.ids for _, a in biased])]), torch.long,
                      logits.device)
    values = to_device(np.concatenate([a.values for _, a in biased]), logits.dtype,
                       logits.device)
    logits.index_put_((index[0], index[1]), values, accumulate=True)
