"""A step whose sampled tokens are still on their way back from the device.

With `EngineConfig.async_scheduling` the engine schedules and launches step N+1 before it reads
step N's tokens (vLLM's async scheduling, SGLang's overlap scheduler), so the host's work for a
step (scheduling, input building, output handling, grammar masks) runs while the GPU computes:

- Step N+1's sampling is queued once step N's outputs are built, in the same call, unless
  they hold some sequence's first token: then it waits for the start of the next call, so
  that token leaves without waiting for the sampling's host work (the first token came
  0.1-0.4 ms sooner on the GPU hosts measured, docs/BENCHMARKS.md); the device is still
  computing step N+1's forward pass when it is queued.
- When step N's sampling is queued, each sampled sequence gets a placeholder token
  `-(row + 1)` at the end of `token_ids` (`InFlight.launch`): its length, block reservations
  and the scheduler already count the token whose value is not known yet.
- Step N+1's inputs take the real token from `InFlight.tokens` on the device
  (`Placeholders.fill`), with no host round trip.
- `InFlight.wait()` returns step N's tokens once their copy landed; the engine writes them over
  the placeholders and only then keys newly full blocks (`KVCacheManager.commit`).
- When step N's tokens are back before step N+1 is launched (`InFlight.ready()`: the host is
  the slower side), the engine receives them first and launches after, so the grammar masks of
  step N+1's sampling fill beside its launch too (grammar_fill.py); step N+1's inputs then hold
  the real tokens.

A step that computes prompt tokens and that no CUDA graph fits is not launched over a step in
flight: it runs eagerly, a long launch on the host, so the engine first hands out the step in
flight and launches the prompt's step on its next call (`LLMEngine.step`). One that a graph
fits is launched like any other.

Invariants: a sequence holds at most one placeholder, always its last token; every placeholder
names a row of the one step in flight; a sequence that finished or was aborted after its step
was launched is not sampled, or ignores the token in flight.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from .outputs import TokenLogprob
from .sampler import DeviceSample
from .sequence import Sequence
from .transfer import HostCopy


@dataclass
class Launched:
    """A step whose forward pass is queued: the sequences whose known tokens are all computed
    after it (`ends`), those of them to sample (not `max_tokens` 0, not embedding inputs) and
    their logits (which the device may still be computing), and the embedding inputs it
    finished (`pooled`)."""

    ends: list[Sequence]
    sampled: list[Sequence]
    logits: torch.Tensor
    pooled: list[Sequence]
    firsts: bool = False  # some sampled row draws its first token (its prompt just finished)


@dataclass
class Received:
    """A step's tokens back on the host, for the sequences still live: row i is seqs[i]'s
    token, its logprob and whether its grammar is complete (set once advanced)."""

    seqs: list[Sequence]
    tokens: list[int]
    logprobs: list[TokenLogprob | None]
    grammar_done: list[bool] = field(default_factory=list)


@dataclass
class InFlight:
    seqs: list[Sequence]  # row i sampled seqs[i]'s next token
    sample: DeviceSample
    copy: HostCopy
    firsts: bool = False  # some row drew its sequence's first token

    @classmethod
    def launch(cls, seqs: list[Sequence], sample: DeviceSample,
               firsts: bool = False) -> InFlight:
        """Start copying `sample` to the host and give each sequence its placeholder; one
        whose placeholder reaches its `stop_len` is marked `last_token_in_flight` (the
        scheduler gives it no step). One walk over the rows for both."""
        copy = HostCopy(sample.tensors())
        for row, seq in enumerate(seqs):
            ids = seq.token_ids
            ids.append(-(row + 1))
            seq.last_token_in_flight = len(ids) >= seq.stop_len
        return cls(seqs, sample, copy, firsts)

    @property
    def tokens(self) -> torch.Tensor:
        """The sampled tokens on the device: what the next step's placeholders read."""
        return self.sample.tokens

    def ready(self) -> bool:
        """Whether `wait` would return at once."""
        return self.copy.ready()

    def wait(self) -> tuple[list[int], list[TokenLogprob | None]]:
        """Block until the tokens (and logprobs) are on the host; per row, token and logprob."""
        return self.sample.read(self.copy.wait())


class Placeholders(NamedTuple):
    """Where a step's inputs hold placeholders: `at[j]` is an input row whose token is
    `tokens[rows[j]]` of the step in flight (device tensors, made by `ModelRunner.prepare`,
    which finds them at the sequences' last inputs)."""

    at: torch.Tensor
    rows: torch.Tensor

    def fill(self, input_ids: torch.Tensor, tokens: torch.Tensor) -> None:
        """Write the real tokens over the placeholders of `input_ids`, in place, on the
        device (two small kernels, no host read)."""
        input_ids[self.at] = tokens[self.rows]
