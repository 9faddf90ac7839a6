"""Per-request and per-choice bookkeeping between sampled tokens and `StepOutput`s."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from .detokenizer import IncrementalDetokenizer
from .outputs import StepOutput, TokenLogprob, Usage
from .sampling_params import SamplingParams
from .sequence import Sequence
from .stop_strings import StopStringFilter
from .tokenizer import Tokenizer


def hidden_ids(params: SamplingParams, eos_ids: frozenset[int]) -> frozenset[int]:
    """The tokens that end a choice with "stop" and show no text: its `stop_token_ids`, and
    the end-of-sequence ids unless `ignore_eos`. One rule for the text the engine makes
    (`ChoiceState`) and the text its worker makes (inference/output_text.py). Requests that
    ask alike get the same set object, so the rows of a step share one."""
    return _hidden(tuple(params.stop_token_ids), params.ignore_eos, eos_ids)


@functools.lru_cache(maxsize=1024)
def _hidden(stop_token_ids: tuple[int, ...], ignore_eos: bool,
            eos_ids: frozenset[int]) -> frozenset[int]:
    hidden = set(stop_token_ids)
    if not ignore_eos:
        hidden |= eos_ids
    return frozenset(hidden)


@dataclass
class ChoiceState:
    """Turns one choice's sampled tokens into safe text deltas and a finish reason.
    `hidden`: `hidden_ids` of its request, whose text shows unless `show_stop` (its
    `include_stop_str_in_output`, as vLLM's: a special token's text still follows
    `skip_special_tokens`); `min_tokens`: its request's, the tokens whose text no stop string
    is looked for in (vLLM's rule; min_tokens.py)."""

    seq: Sequence
    detok: IncrementalDetokenizer | None
    stops: StopStringFilter
    hidden: frozenset[int]
    min_tokens: int = 0
    show_stop: bool = False
    finish_reason: str | None = None

    def on_token(
        self,
        token: int,
        logprob: TokenLogprob | None,
        grammar_done: bool = False,
    ) -> StepOutput:
        """`token` is already the sequence's last token. `grammar_done`: the sequence's
        grammar is complete, so this token ends it ("stop"); an eos token that completes it is
        not shown, any other token is. Hot path (a row of every step): it reads the sequence
        and objects rows share, not the request's parameters."""
        seq = self.seq
        reason = None
        hidden = token in self.hidden
        if hidden or grammar_done:  # a stop token's text is not shown; a grammar's last is
            reason = "stop"
        elif len(seq.token_ids) >= seq.stop_len:
            reason = "length"
        text = ""
        if self.detok is not None:
            text = "" if hidden and not self.show_stop else self.detok.push_one(token)
            if reason is not None:
                text += self.detok.flush()
            if self.stops.stops:  # else every text goes out as it is
                text = self.stops.feed(text, final=reason is not None,
                                       look=seq.num_output_tokens > self.min_tokens)
                if self.stops.stopped:
                    reason = "stop"
        self.finish_reason = reason
        # Positional: half the cost of keywords, and this runs per sequence per step.
        return StepOutput(seq.request_id, seq.index, [token], text,
                          None if logprob is None else [logprob], reason)


@dataclass
class RequestState:
    request_id: str
    params: SamplingParams
    prompt_len: int
    choices: list[ChoiceState] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return len(self.choices) == self.params.n and all(c.finish_reason for c in self.choices)

    def usage(self) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_len,
            completion_tokens=sum(c.seq.num_output_tokens for c in self.choices),
            cached_tokens=self.choices[0].seq.num_cached_tokens,
        )

    def end_unsampled(self, reason: str) -> list[StepOutput]:
        """End every choice now with `reason` and no tokens (an echo request with
        `max_tokens` 0, whose other choices were never forked); the last output has usage."""
        for choice in self.choices:
            choice.finish_reason = reason
        outs = [StepOutput(self.request_id, i, [], "", finish_reason=reason)
                for i in range(self.params.n)]
        outs[-1].usage = self.usage()
        return outs

    def new_choice(self, seq: Sequence, tokenizer: Tokenizer | None,
                   eos_ids: frozenset[int]) -> ChoiceState:
        """A choice of this request; `tokenizer` None: it makes no text."""
        detok = None if tokenizer is None else \
            IncrementalDetokenizer(tokenizer, self.params.skip_special_tokens)
        stops = StopStringFilter(self.params.stop, self.params.include_stop_str_in_output)
        choice = ChoiceState(seq, detok, stops, hidden_ids(self.params, eos_ids),
                             self.params.min_tokens, self.params.include_stop_str_in_output)
        self.choices.append(choice)
        return choice
