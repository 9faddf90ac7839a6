"""The one check of a prompt (and of the token ids a request names: `logit_bias`,
`stop_token_ids`, `allowed_token_ids`) against what an engine can hold, shared by the engine
(on `add_request`) and the worker (before it accepts, so a refusal is a reply, not a stream
error).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import ContextLengthExceeded, InvalidParameter
from .sampling_params import SamplingParams


@dataclass(frozen=True)
class PromptLimits:
    """What bounds a prompt: the context served (never more than the KV pool holds, see
    engine_setup.py) and the vocabulary."""

    max_model_len: int
    vocab_size: int


def check_prompt(ids: Sequence[int], max_tokens: int | None, limits: PromptLimits) -> None:
    """Raise a typed `RequestRejected` unless `ids` (plus `max_tokens`, when given) fits."""
    n = len(ids)
    if not n:
        raise InvalidParameter("prompt", "must not be empty")
    ctx = limits.max_model_len
    if n >= ctx:
        raise ContextLengthExceeded(
            "messages", f"the prompt has {n} tokens; this model's context is {ctx} tokens, "
            "which leaves no room to generate")
    if max_tokens is not None and n + max_tokens > ctx:
        raise ContextLengthExceeded(
            "max_tokens", f"the prompt ({n} tokens) plus max_tokens ({max_tokens}) exceeds "
            f"this model's context of {ctx} tokens")
    vocab = limits.vocab_size
    if min(ids) < 0 or max(ids) >= vocab:
        raise InvalidParameter("prompt", f"token ids must be in [0, {vocab})")


def check_token_ids(params: SamplingParams, limits: PromptLimits) -> None:
    """Raise `InvalidParameter` naming the field unless every token id a request names (its
    `logit_bias` keys, `stop_token_ids`, `allowed_token_ids`) is in the vocabulary."""
    vocab = limits.vocab_size
    for param, ids in (("logit_bias", params.logit_bias),
                       ("stop_token_ids", params.stop_token_ids),
                       ("allowed_token_ids", params.allowed_token_ids or ())):
        bad = next((t for t in ids if not 0 <= t < vocab), None)
        if bad is not None:
            raise InvalidParameter(param, f"token id {bad} is outside the vocabulary "
                                   f"[0, {vocab})")
