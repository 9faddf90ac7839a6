"""Presence, frequency and repetition penalties, for the whole batch at once.

Contract:
- OpenAI's two act on the tokens a sequence has generated: `logit[t] -= frequency_penalty *
  count[t] + presence_penalty * (count[t] > 0)`.
- vLLM's (and transformers') `repetition_penalty` r acts on every token seen, prompt and
  generated: a seen token's logit is divided by r when positive, multiplied by r otherwise.
- The sampler applies them to the model's logits, before `logit_bias` and grammar masks, so
  logprobs are of the penalised distribution (as they are of a biased one).
- Each penalised sequence's counts live on the logits' device, in a row ("slot") of
  `counts` and of `seen` (its prompt's tokens), taken the first time it is sampled and given
  back by `release` when it leaves the engine. The token a step draws is counted on the
  device (`count`), so the next step needs nothing from the host: in the overlapped loop that
  token is still on its way. All of a slot's device work is queued on one stream in order,
  so a slot given back while a count for it is in flight is cleared only after that count
  lands.
- The slots stay within `cap` (the engine's `max_num_seqs`, the most sequences a step
  samples) while they can: when none is free, the slots of preempted sequences (waiting to
  be recomputed) are given back first, and grown past `cap` only when every holder runs. A
  sequence that takes a slot again has its counts rebuilt from its generated tokens, every
  one of them real by then (it was recomputed from them).
- A batch without a penalised row costs nothing here (the sampler's plan says so).
"""

from __future__ import annotations

from collections.abc import Sequence as PySequence
from dataclasses import dataclass
from typing import Protocol

import torch

from .sampling_params import SamplingParams
from .sequence import SequenceStatus
from .transfer import to_device

FIRST_SLOTS = 8  # slots made at the first penalised row; doubled when they run out
BYTES_PER_ENTRY = 5  # a slot's int32 count and bool seen flag, per vocabulary entry


class PenalizedRow(Protocol):
    """What a penalty reads of a row: an engine `Sequence` is one."""

    seq_id: int
    token_ids: list[int]
    num_prompt_tokens: int
    params: SamplingParams
    status: SequenceStatus


@dataclass
class Applied:
    """The rows a step penalised (their places in the batch) and their slots, on the device:
    what `count` needs once the step's tokens are drawn."""

    at: torch.Tensor
    slots: torch.Tensor


class Penalties:
    """The penalised sequences' token counts on `device`, for a vocabulary of `vocab`."""

    def __init__(self, vocab: int, device: torch.device, cap: int) -> None:
        self.vocab, self.device, self.cap = vocab, device, cap
        self.counts = torch.zeros(0, vocab, dtype=torch.int32, device=device)
        self.seen = torch.zeros(0, vocab, dtype=torch.bool, device=device)  # prompt tokens
        self.slots: dict[int, tuple[int, PenalizedRow]] = {}  # seq_id -> (its slot, itself)
        self._free: list[int] = []

    @torch.inference_mode()  # the runner's logits are inference tensors: written in place here
    def apply(self, logits: torch.Tensor, rows: PySequence[PenalizedRow],
              at: list[int]) -> Applied:
        """Penalise `logits[at[i]]` for `rows[i]`, in place."""
        slots = [self._slot(r) for r in rows]
        params = [r.params for r in rows]
        where = to_device(at, torch.long, self.device)
        taken = to_device(slots, torch.long, self.device)
        counts = self.counts[taken]
        out = logits[where]
        if any(p.repetition_penalty != 1.0 for p in params):
            r = self._column([p.repetition_penalty for p in params])
            seen = self.seen[taken] | (counts > 0)
            out = torch.where(seen, torch.where(out > 0, out / r, out * r), out)
        if any(p.frequency_penalty or p.presence_penalty for p in params):
            freq = self._column([p.frequency_penalty for p in params])
            presence = self._column([p.presence_penalty for p in params])
            out = out - freq * counts - presence * (counts > 0)
        logits[where] = out
        return Applied(where, taken)

    @torch.inference_mode()
    def count(self, applied: Applied, tokens: torch.Tensor) -> None:
        """Add the step's drawn `tokens` (one per batch row) to the penalised rows' counts."""
        ones = torch.ones(len(applied.slots), dtype=torch.int32, device=self.device)
        self.counts.index_put_((applied.slots, tokens[applied.at]), ones, accumulate=True)

    def release(self, seq_id: int) -> None:
        """The sequence left the engine: its slot is free for another."""
        held = self.slots.pop(seq_id, None)
        if held is not None:
            self._free.append(held[0])

    def _column(self, values: list[float]) -> torch.Tensor:
        return to_device(values, torch.float32, self.device)[:, None]

    def _slot(self, row: PenalizedRow) -> int:
        held = self.slots.get(row.seq_id)
        if held is not None:
            return held[0]
        if not self._free and not self._give_back_waiting():
            self._grow()
        slot = self._free.pop()
        self.slots[row.seq_id] = (slot, row)
        self.counts[slot].zero_()
        self.seen[slot].zero_()
        prompt = row.token_ids[:row.num_prompt_tokens]
        if prompt:
            self.seen[slot, to_device(prompt, torch.long, self.device)] = True
        generated = row.token_ids[row.num_prompt_tokens:]
        if generated:  # back from preemption: its counts again
            ids = to_device(generated, torch.long, self.device)
            self.counts[slot].index_add_(0, ids, torch.ones_like(ids, dtype=torch.int32))
        return slot

    def _give_back_waiting(self) -> bool:
        """At `cap`, free the slots of sequences waiting to be recomputed; whether any was."""
        if self.counts.shape[0] < self.cap:
            return False
        waiting = [sid for sid, (_, r) in self.slots.items()
                   if r.status is SequenceStatus.WAITING]
        for sid in waiting:
            self.release(sid)
        return bool(waiting)

    def _grow(self) -> None:
        old = self.counts.shape[0]
        new = max(min(FIRST_SLOTS, self.cap), 2 * old)
        if old < self.cap:
            new = min(new, self.cap)
        counts = torch.zeros(new, self.vocab, dtype=torch.int32, device=self.device)
        seen = torch.zeros(new, self.vocab, dtype=torch.bool, device=self.device)
        counts[:old], seen[:old] = self.counts, self.seen
        self.counts, self.seen = counts, seen
        self._free.extend(range(new - 1, old - 1, -1))  # the lowest slot is taken first
