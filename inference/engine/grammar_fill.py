"""The grammar masks of the next sampling, filled on a background thread while the engine
handles the last step's outputs (and, when the host is the slower side, launches the next
forward pass).

Once a step's tokens are back, the engine (`LLMEngine._receive`, then `_emit`):
1. feeds every constrained sequence its token (`MaskFill.advance`, batched, cheap);
2. hands the masks of the sequences it expects to sample next to one background worker
   (`MaskFill.start`); llguidance's executor fills them with the GIL dropped;
3. detokenises, checks stop strings and builds the outputs (then commits blocks) meanwhile,
   after launching the next forward pass if the tokens were back before it (inflight.py);
4. and, as it launches that sampling, takes the rows (`MaskFill.masks`), waiting only for
   what is left of the fill. On CUDA the rows are filled straight into one pinned buffer, which
   the sampler copies to the device without a staging copy.

Which sequences come next: with the overlapped loop (inflight.py) the sampled rows of the step
just launched (or about to be), known exactly; with the plain loop the sequences just sampled,
since the next step is not scheduled yet (the fill then also runs beside the next call's
scheduling and forward pass). A sampled sequence whose row was not foreseen (a prompt that just
completed, a forked choice, n > 1) is filled on the spot; a foreseen one that is not sampled (it
ended on a stop string or max_tokens, was aborted or preempted) just leaves its row unused.

Invariants:
- While a fill runs no other thread touches its matchers: the engine advances matchers only
  through `advance`, which first waits for a fill in flight.
- A background row is used only if its sequence has not grown since the fill started (so its
  matcher has consumed no token since): a stale fill never masks a later step.
- One worker thread, started on first use; a step with no constrained sequence to fill hands
  nothing to it and waits for nothing. `start` returns once the worker has begun the fill, so
  the engine's thread, busy in Python, cannot hold the GIL from it; or after `START_WAIT_S`
  if the worker cannot begin, since `masks` waits for the fill anyway (a late start costs
  speed, never a hang).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import torch

from .grammar import GrammarMask, Grammars
from .sequence import Sequence, SequenceStatus

START_WAIT_S = 1.0  # the longest `start` waits for the worker to begin


@dataclass
class _Job:
    """A fill in the background: row j of its result is seqs[j]'s mask at length lengths[j]."""

    seqs: list[Sequence]
    lengths: list[int]
    bits: Future[torch.Tensor]


class MaskFill:
    """The engine's one background mask filler (see the module docstring)."""

    def __init__(self, grammars: Grammars, pinned: bool = False) -> None:
        """`pinned` (CUDA): background fills write straight into one pinned host buffer, so
        the sampler's host-to-device copy of the mask needs no staging copy (measured on the
        H200's host: pinning a fresh 1 MB mask each step cost ~1.4 ms of the step)."""
        self.grammars = grammars
        self._worker: ThreadPoolExecutor | None = None
        self._job: _Job | None = None
        self._pinned = pinned
        self._buffer: torch.Tensor | None = None

    def _out(self, rows: int) -> torch.Tensor | None:
        """The first `rows` rows of the pinned buffer (grown as needed), or None. The buffer is
        rewritten only by `start`, which the engine calls once the last sampling's tokens are
        back: the host-to-device copy of the mask it used was queued before that sampling on
        the same stream, so it has finished reading the buffer."""
        if not self._pinned:
            return None
        if self._buffer is None or self._buffer.shape[0] < rows:
            self._buffer = torch.empty((max(rows, 64), self.grammars.words), dtype=torch.int32,
                                       pin_memory=True)
        return self._buffer[:rows]

    def advance(self, seqs: list[Sequence], tokens: list[int]) -> list[bool]:
        """`Grammars.advance`, once no fill is running: per sequence, whether its grammar is
        complete."""
        if self._job is not None:
            wait([self._job.bits])
        return self.grammars.advance(seqs, tokens)

    def start(self, seqs: list[Sequence]) -> None:
        """Start filling, in the background, the masks of those of `seqs` that are constrained
        and may be sampled again (running, grammar not complete, not at their length limit).
        Replaces any fill not taken."""
        rows = [s for s in seqs if s.matcher is not None and s.status is SequenceStatus.RUNNING
                and not s.last_token_in_flight and not s.matcher.is_stopped()]
        if self._job is not None:
            wait([self._job.bits])
            self._job = None
        if not rows:
            return
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="kvmesh-grammar-fill")
        entered = threading.Event()
        self._job = _Job(rows, [s.num_tokens for s in rows],
                         self._worker.submit(self._fill, rows, entered, self._out(len(rows))))
        # Wait (GIL dropped) until the worker runs the fill. Without this the engine's thread,
        # busy in Python with the outputs, keeps the GIL and the worker waits for it a whole
        # switch interval (5 ms): on the H200 the fill then ran after the outputs, not beside.
        # Bounded: a late start costs only speed, as `masks` waits for the fill itself.
        entered.wait(START_WAIT_S)

    def _fill(self, rows: list[Sequence], entered: threading.Event,
              out: torch.Tensor | None) -> torch.Tensor:
        entered.set()  # llguidance drops the GIL a few microseconds later, inside `fill`
        return self.grammars.fill(rows, out)

    def masks(self, seqs: list[Sequence]) -> GrammarMask | None:
        """The bitmask of the constrained rows of `seqs` (the rows about to be sampled): rows
        filled in the background where still valid, the others filled now. Takes the fill in
        flight (waiting for it); None when no row of `seqs` is constrained."""
        start = time.perf_counter()
        try:
            return self._take(seqs)
        finally:
            self.grammars.stats.mask_wait_seconds += time.perf_counter() - start

    def _take(self, seqs: list[Sequence]) -> GrammarMask | None:
        job, self._job = self._job, None
        filled = job.bits.result() if job is not None else None
        rows = [i for i, s in enumerate(seqs) if s.matcher is not None]
        if not rows:
            return None
        self.grammars.stats.constrained_tokens += len(rows)
        at: dict[Sequence, int] = {}
        if job is not None:
            at = {s: j for j, (s, n) in enumerate(zip(job.seqs, job.lengths, strict=True))
                  if s.num_tokens == n}
        src = [at.get(seqs[i], -1) for i in rows]
        if filled is not None and src == list(range(len(filled))):
            return GrammarMask(torch.tensor(rows), filled)  # the fill foresaw exactly these
        bits = torch.empty((len(rows), self.grammars.words), dtype=torch.int32)
        hit = [k for k, j in enumerate(src) if j >= 0]
        if hit:
            bits[hit] = filled[[src[k] for k in hit]]
        missing = [k for k, j in enumerate(src) if j < 0]
        if missing:
            bits[missing] = self.grammars.fill([seqs[rows[k]] for k in missing])
        return GrammarMask(torch.tensor(rows), bits)
