"""What the engine hands back: per-step deltas for streaming, and whole results for `LLM`."""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec


@dataclass
class TokenLogprob:
    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0


@dataclass
class PromptOutput:
    """A request's prompt, reported once (with `echo`) when its prefill completes: its ids and
    text, and with `prompt_logprobs` one `TokenLogprob` per prompt token after the first (the
    first has nothing to condition on), else None."""

    token_ids: list[int]
    text: str
    logprobs: list[TokenLogprob] | None = None


class StepOutput(msgspec.Struct, array_like=True):
    """One choice's progress in one engine step.

    `text` is the new, safe-to-show text: never half a UTF-8 character, never part of a stop
    string ("" where the engine leaves the text to its caller: `LLMEngine.detokenize`).
    `finish_reason` is None while running, else "stop", "length" or "abort"; `usage` is set on
    the step that finishes the last choice of a request. `prompt` is set on one output of an
    `echo` request (index 0, no tokens), before any of its tokens.

    A msgspec Struct, not a dataclass: one is built per sequence per step, in about half the
    time, and a step's outputs travel to the worker encoded as they are, each a msgpack array
    (inference/engine_protocol.py), with no pass copying them into rows first.
    """

    request_id: str
    index: int
    token_ids: list[int]
    text: str
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    prompt: PromptOutput | None = None


@dataclass
class Completion:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None
    logprobs: list[TokenLogprob] | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[Completion]
    usage: Usage
    prompt: PromptOutput | None = None  # with echo
