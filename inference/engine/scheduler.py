"""Continuous batching: which sequences compute how many tokens in the next step.

Budget rules, per step:
- At most `max_num_batched_tokens` tokens and `max_num_seqs` sequences.
- Running decodes go first (one token each), then running prefills continue in chunks, then
  waiting sequences are admitted, highest priority first, then in fair-share turns (below),
  oldest first within a group; a prefill takes
  whatever budget is left (chunked prefill), so a long prompt never stalls the decodes.
- When the pool cannot hold a running sequence's next tokens, the running sequence of lowest
  priority (newest among equals) is preempted: its blocks are freed and it goes back to the
  waiting queue to be recomputed (its full blocks usually come back as prefix-cache hits). A
  waiting sequence may preempt only running sequences of strictly lower priority.
- Admission is in order: if the head of the queue does not fit, nothing behind it is admitted
  (no starvation of long prompts by short ones of the same class).
- Fair share within a priority (start-time fair queueing over sequences): a sequence first
  queued gets the tag max(its group's last tag, the tag of the latest admitted sequence) + 1,
  where its group is `params.share` (a served worker's tenant), and the queue is ordered by
  tag. A group's sequences keep their order; a group that arrives behind another's thousand
  waiting sequences is admitted next, not after them. With one group, tags follow arrival:
  first come, first served. A preempted sequence keeps its tag (its place), and a forked
  choice gets a tag as it joins.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from operator import attrgetter

from .config import EngineConfig
from .kv_cache import KVCacheManager
from .sequence import Sequence, SequenceStatus


@dataclass
class ScheduledBatch:
    seqs: list[Sequence] = field(default_factory=list)
    num_tokens: list[int] = field(default_factory=list)  # new tokens per sequence this step
    # Filled as the step is launched (`LLMEngine._launch`, in the walk that counts the tokens
    # computed): (request id, tokens) of each sequence that computed part of its prompt.
    prefills: list[tuple[str, int]] = field(default_factory=list)

    def add(self, seq: Sequence, n: int) -> None:
        self.seqs.append(seq)
        self.num_tokens.append(n)

    def leading_decodes(self) -> int:
        """How many sequences at the head of the batch compute one token each (the scheduler
        puts running decodes first)."""
        for i, n in enumerate(self.num_tokens):
            if n != 1:
                return i
        return len(self.num_tokens)

    @property
    def total_tokens(self) -> int:
        return sum(self.num_tokens)

    def __len__(self) -> int:
        return len(self.seqs)


_BY_QUEUE_KEY = attrgetter("queue_key")


class Scheduler:
    def __init__(self, config: EngineConfig, kv: KVCacheManager):
        self.max_tokens = config.max_num_batched_tokens
        self.max_seqs = config.max_num_seqs
        self.kv = kv
        # Both sorted by `Sequence.queue_key`, kept so on entry: a step walks `running` in
        # that order without sorting it.
        self.waiting: list[Sequence] = []
        self.running: list[Sequence] = []
        self.num_preemptions = 0
        self._vtime = 0  # the fair-share tag of the latest admitted sequence
        self._last_tag: dict[str, int] = {}  # each group's latest tag, while it is ahead

    def add(self, seq: Sequence) -> None:
        if seq.queue_key[1] == 0:  # first queued: a preempted sequence keeps its place
            self._tag(seq)
        seq.status = SequenceStatus.WAITING
        self.waiting.insert(bisect.bisect(self.waiting, seq.queue_key, key=_BY_QUEUE_KEY), seq)

    def add_running(self, seq: Sequence) -> None:
        """A forked child joins the running set with the blocks it shares."""
        self._tag(seq)
        seq.status = SequenceStatus.RUNNING
        bisect.insort(self.running, seq, key=_BY_QUEUE_KEY)

    def _tag(self, seq: Sequence) -> None:
        group = seq.params.share
        tag = max(self._last_tag.get(group, 0), self._vtime) + 1
        self._last_tag[group] = tag
        seq.queue_key = (seq.queue_key[0], tag, seq.queue_key[2])
        if len(self._last_tag) > 4096:  # a group at or behind the virtual time needs no entry
            self._last_tag = {g: t for g, t in self._last_tag.items() if t > self._vtime}

    def remove(self, seq: Sequence) -> None:
        """Drop a finished or aborted sequence and free its blocks."""
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
        elif seq.status is SequenceStatus.WAITING and seq in self.waiting:
            self.waiting.remove(seq)
        self.kv.free(seq)
        seq.status = SequenceStatus.FINISHED

    def schedule(self) -> ScheduledBatch:
        batch = ScheduledBatch()
        budget = self.max_tokens
        # Decodes first, then unfinished prefills; within each, higher priority first. Hot
        # path: once per step over every running sequence.
        prefills: list[Sequence] = []
        seqs, counts, try_reserve = batch.seqs, batch.num_tokens, self.kv.try_reserve
        for seq in self.running[:]:  # a copy: preempting removes from `running`
            new = len(seq.token_ids) - seq.num_computed_tokens  # `num_new_tokens`, inlined
            if new > 1:  # a decode preempted above (every token to recompute) lands here too
                prefills.append(seq)  # and `_continue` skips it
            elif (new == 1 and not seq.last_token_in_flight and budget
                  and len(seqs) < self.max_seqs and try_reserve(seq, 1)):
                seqs.append(seq)  # a decode that has its slot: `_continue` and `batch.add`,
                counts.append(1)  # inlined (one call a row, not four)
                budget -= 1
            else:  # the rest of `_continue`'s cases: skipped, or room made by preempting
                budget -= self._continue(seq, batch, budget)
        for seq in prefills:
            budget -= self._continue(seq, batch, budget)
        while self.waiting and budget > 0 and len(batch) < self.max_seqs:
            seq = self.waiting[0]
            n = min(seq.num_new_tokens, budget)
            if not self._make_room_to_admit(seq, n, batch):
                break
            self.waiting.pop(0)
            self._vtime = max(self._vtime, seq.queue_key[1])
            cached = self.kv.admit(seq)
            if not seq.admitted:  # re-admitted after preemption: its own blocks, not hits
                seq.admitted, seq.num_cached_tokens = True, cached
            n = min(seq.num_new_tokens, budget)
            self.kv.reserve(seq, n)
            seq.status = SequenceStatus.RUNNING
            bisect.insort(self.running, seq, key=_BY_QUEUE_KEY)
            batch.add(seq, n)
            budget -= n
        return batch

    def _continue(self, seq: Sequence, batch: ScheduledBatch, budget: int) -> int:
        """Put a running sequence's next tokens in `batch`, preempting others for room if
        need be; the tokens it took (0: none, the step is full, or it was preempted)."""
        if seq.status is not SequenceStatus.RUNNING or seq.last_token_in_flight:
            return 0  # preempted earlier in this step, or ends when its token lands
        if budget == 0 or len(batch) == self.max_seqs:
            return 0
        n = min(seq.num_new_tokens, budget)
        if not self.kv.try_reserve(seq, n):
            if not self._make_room(seq, n, batch, strictly_lower=False):
                return 0
            self.kv.reserve(seq, n)
        batch.add(seq, n)
        return n

    def _make_room(
        self, seq: Sequence, n: int, batch: ScheduledBatch, strictly_lower: bool
    ) -> bool:
        """Preempt victims until `seq` can reserve `n` tokens. False if `seq` was preempted."""
        while not self.kv.can_reserve(seq, n):
            victim = self._pick_victim(seq, batch, strictly_lower)
            if victim is None:
                if not strictly_lower:
                    self._preempt(seq)
                return False
            self._preempt(victim)
        return True

    def _make_room_to_admit(self, seq: Sequence, n: int, batch: ScheduledBatch) -> bool:
        while not self.kv.can_admit(seq, n):
            victim = self._pick_victim(seq, batch, strictly_lower=True)
            if victim is None:
                return False
            self._preempt(victim)
        return True

    def _pick_victim(
        self, seq: Sequence, batch: ScheduledBatch, strictly_lower: bool
    ) -> Sequence | None:
        """Lowest priority, newest first; never one already in this step's batch, nor one
        that frees its blocks when its last token lands."""
        scheduled = set(map(id, batch.seqs))
        candidates = [
            s
            for s in self.running
            if s is not seq
            and id(s) not in scheduled
            and not s.last_token_in_flight
            and (s.priority < seq.priority or (not strictly_lower and s.priority == seq.priority))
        ]
        if not candidates:
            return None
        return max(candidates, key=_BY_QUEUE_KEY)

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.kv.free(seq)
        seq.reset_for_recompute()
        self.num_preemptions += 1
        self.add(seq)
