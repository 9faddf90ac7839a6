"""Grammar-constrained decoding: one llguidance matcher per constrained sequence, one token
bitmask per step for the rows being sampled.

Contract:
- `Grammars.new_matcher(params)` gives a sequence its own matcher and that matcher's lane
  ((None, 0) when unconstrained). Compiled grammars are cached by a hash of (kind, source),
  LRU, `cache_size` entries; a new sequence gets a `deep_copy` of a cached pristine matcher,
  so a schema compiles once (plus its lanes, below). A grammar that does not compile raises
  `InvalidParameter` (a ValueError) naming `grammar`, and is not cached; one whose parser
  breaks while a sequence decodes (`advance`) leaves the cache.
- `ready(params)` compiles a new grammar off the caller's thread (one grammar thread): the
  engine holds a constrained request back until its grammar is ready, so compiling one
  (up to a second or more within llguidance's limits, the GIL dropped) never stalls the
  steps of the others.
- Lanes: the deep copies of one compiled matcher share its lexer state behind one lock (held
  for a whole mask or token), so their masks are computed one at a time however many threads
  fill them (measured on the H200's host: 64 copies, 4.0 ms a step with 1 thread, 5.2 with 8).
  Each cache entry holds up to `lanes` pristine matchers, compiled separately (the second and
  later when first needed, ~1.5 ms each, counted as `lane_compiles`) and handed out round
  robin, so the rows of one schema spread over `lanes` locks and the executor's `threads`
  fill them in parallel. `threads` defaults to 80 % of the CPUs this process may use, at
  most 16; `lanes` to 64 with two threads or more (one per row of a 64-row batch: on the
  H200's host, 64 rows of one schema on 12 threads filled in 1.06 ms a step with 64 lanes,
  1.43-1.49 with 12 or 24, whose rows still queued on shared locks) and to 1 with one thread
  (nothing to contend for: a 2-core machine). A lane holds ~0.1-0.2 MB (a compiled JSON
  schema with its lexer states after use). Lanes beyond each grammar's first are capped
  across the whole cache (`spare_lanes`, 1,024: ~100-200 MB), so a full cache of busy schemas
  cannot grow to 256 x 64 lanes; past the cap a grammar hands out the lanes it has, round
  robin, and an evicted grammar gives its lanes back to the cap.
  Rows go to the executor lane by lane (sorted by `Sequence.grammar_lane`): its rayon pool
  splits the row list into contiguous halves, and in batch order (row i on lane i % lanes)
  every power-of-two split starts on the same lane, so the threads walk the lanes in step and
  queue on each lock.
- `fill(seqs)` gives the bitmask rows of constrained sequences; the engine asks only for the
  constrained rows of a step (`grammar_fill.MaskFill.masks` makes the `GrammarMask`), so a
  batch without grammars pays nothing, and unconstrained rows are never touched: their tokens
  do not depend on what else is in the batch. `fill` may run on any one thread while no other
  thread touches those matchers: the engine calls it on a background thread through
  `MaskFill`, which keeps that rule.
- `advance(seqs, tokens)` feeds each sequence its sampled token and says, per sequence,
  whether its grammar is complete (it should stop). The matcher lives on the `Sequence`, and
  a sequence preempted by recompute keeps its generated tokens (only their K/V is
  recomputed), so its matcher state stays exact; nothing is replayed. A forked choice (n > 1)
  is created before any token is sampled, so it starts from a fresh matcher like its parent.
- The mask is built on the CPU (llguidance's Rust, the rows handed to its executor, the GIL
  dropped: a Python loop beside a running fill keeps its speed). The engine fills the next
  sampling's masks on a background thread while it handles the last step's outputs
  (grammar_fill.py), so the fill overlaps the host's own work as well as, on CUDA, the GPU's
  (docs/BENCHMARKS.md measures how much).
- `warm()` pays llguidance's one-time costs (its tokenizer, ~0.2 s for a 50k vocabulary, and
  the first mask) so that no constrained request stalls its whole batch for them; a served
  engine runs it in a thread at start-up (engine_loop.py), so it must not hold the GIL for
  long: llguidance is imported with this module, and masks are filled through the executor
  directly (`_fill`), never through `llguidance.torch`, whose import holds the GIL ~2 s. The
  tokenizer is built once, under a lock, whichever thread asks first.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import torch

from kvmesh.grammar import limits, to_llguidance

try:  # imported with the engine, not in `warm`'s thread: the first import holds the GIL ~0.2 s
    import llguidance
except ImportError:  # constrained requests fail with the ImportError; the rest runs
    llguidance = None

from .errors import InvalidParameter
from .sampling_params import SamplingParams
from .sequence import Sequence
from .tokenizer import Tokenizer


@dataclass
class GrammarMask:
    """`rows`: indices (into the sampled rows) of constrained rows; `bits`: [len(rows), words]
    int32, bit j of word w allows token 32*w + j."""

    rows: torch.Tensor
    bits: torch.Tensor


@dataclass
class GrammarStats:
    compiles: int = 0
    cache_hits: int = 0
    compile_seconds: float = 0.0  # including lane compiles
    lane_compiles: int = 0  # further pristine copies of a cached grammar (see Lanes)
    constrained_tokens: int = 0  # tokens sampled under a grammar, in total
    mask_seconds: float = 0.0  # host time building the per-step bitmasks (any thread)
    mask_wait_seconds: float = 0.0  # of which the engine waited for (grammar_fill.py)


def _require_llguidance() -> None:
    if llguidance is None:
        raise ImportError("constrained decoding needs llguidance: pip install llguidance")


def default_threads() -> int:
    """80 % of the CPUs this process may use, at least 1 and at most 16 (see Lanes)."""
    return max(1, min(16, int(0.8 * len(os.sched_getaffinity(0)))))


def default_lanes(threads: int) -> int:
    """64 with two threads or more, 1 with one (see Lanes)."""
    return 64 if threads > 1 else 1


@dataclass
class _Entry:
    """One cached grammar: its pristine matchers (one per lane, compiled as first needed)
    and how many sequences it has handed out."""

    pristine: list[Any]
    handed: int = 0


class Grammars:
    """Compiled-grammar cache and the per-step mask and advance of the engine."""

    def __init__(self, tokenizer: Tokenizer | None, vocab_size: int, eos_ids: frozenset[int],
                 cache_size: int = 256, lanes: int | None = None,
                 threads: int | None = None, spare_lanes: int = 1024) -> None:
        self._tokenizer = tokenizer
        self.vocab_size = vocab_size
        self._eos = sorted(eos_ids)
        self._lltok: Any = None  # built on first use: 0.2 s for a 50k vocabulary
        self._executor: Any = None
        self._lock = threading.Lock()  # `warm` may run in another thread
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._cache_size = cache_size
        self.threads = threads or default_threads()  # the executor's
        self.lanes = lanes or default_lanes(self.threads)
        self.spare_lanes = spare_lanes  # lanes beyond each grammar's first, cache-wide
        self._spares = 0  # of them compiled, in the cache now
        self.stats = GrammarStats()
        # grammars compiling off the engine's thread (`ready`), by key; one thread, so one
        # caller's costly grammars queue behind each other, never beside the engine's steps
        self._compiling: dict[str, Future[Any]] = {}
        self._pool: ThreadPoolExecutor | None = None

    def _ll_tokenizer(self) -> Any:
        with self._lock:
            if self._lltok is None:
                _require_llguidance()
                if self._tokenizer is None:
                    raise InvalidParameter("grammar", "this model has no tokenizer to constrain")
                self._executor = llguidance.LLExecutor(self.threads)
                self._lltok = llguidance.LLTokenizer(
                    self._tokenizer.to_json(), n_vocab=self.vocab_size, eos_token=self._eos)
            return self._lltok

    def warm(self) -> None:
        """Build the tokenizer and one mask of a throwaway grammar (not cached), so that the
        first constrained step costs what any step does. Does nothing without a tokenizer or
        without llguidance."""
        if self._tokenizer is None:
            return
        try:
            matcher = self._build("regex", "a")
        except ImportError:
            return
        self._fill([matcher], torch.empty((1, (self.vocab_size + 31) // 32), dtype=torch.int32))

    def ready(self, params: SamplingParams) -> bool:
        """Whether `new_matcher(params)` answers at once: unconstrained, cached, or compiled
        in the background since. Else the grammar starts compiling on the grammar thread (one
        compile per grammar however many ask) and this says False until it is done, so a
        costly grammar (llguidance compiles up to its `limits()`: a second or more) delays its
        own request only, never the engine's steps. Engine thread only."""
        if not params.grammar_kind:
            return True
        key = _key(params)
        if key in self._cache:
            return True
        pending = self._compiling.get(key)
        if pending is None:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="grammar-compile")
            self._compiling[key] = self._pool.submit(self._compile, params.grammar_kind,
                                                     params.grammar)
            return False
        return pending.done()

    def abandon(self, params: SamplingParams) -> None:
        """No request waits for this grammar any more: its compile, when done, is dropped
        rather than kept for nobody."""
        self._compiling.pop(_key(params), None)

    def wait_compiling(self, timeout: float) -> None:
        """Return when a background compile is done, or after `timeout` seconds."""
        if self._compiling:
            wait(list(self._compiling.values()), timeout, FIRST_COMPLETED)

    def new_matcher(self, params: SamplingParams) -> tuple[Any, int]:
        """A fresh matcher for a sequence of `params` and its lane, or (None, 0) when it is
        unconstrained. A grammar not cached is taken from its background compile when that
        is done (`ready`), else compiled here; one that does not compile raises
        `InvalidParameter` and is not cached (a request sending it again compiles it
        again)."""
        if not params.grammar_kind:
            return None, 0
        kind, source = params.grammar_kind, params.grammar
        key = _key(params)
        entry = self._cache.get(key)
        if entry is None:
            pending = self._compiling.pop(key, None)
            matcher = pending.result() if pending is not None and pending.done() \
                else self._compile(kind, source)
            entry = self._cache[key] = _Entry([matcher])
            self.stats.compiles += 1
            if len(self._cache) > self._cache_size:
                self._spares -= len(self._cache.popitem(last=False)[1].pristine) - 1
        else:
            self._cache.move_to_end(key)
            self.stats.cache_hits += 1
        lane = entry.handed % self.lanes
        entry.handed += 1
        if lane >= len(entry.pristine):
            if self._spares < self.spare_lanes:
                entry.pristine.append(self._compile(kind, source))
                self._spares += 1
                self.stats.lane_compiles += 1
                lane = len(entry.pristine) - 1
            else:  # the cap is reached: share the lanes this grammar has
                lane %= len(entry.pristine)
        return entry.pristine[lane].deep_copy(), lane

    def _compile(self, kind: str, source: str) -> Any:
        start = time.perf_counter()
        try:
            return self._build(kind, source)
        finally:
            self.stats.compile_seconds += time.perf_counter() - start

    def _build(self, kind: str, source: str) -> Any:
        _require_llguidance()
        template = None if self._tokenizer is None else self._tokenizer.chat_template
        matcher = llguidance.LLMatcher(self._ll_tokenizer(), to_llguidance(kind, source, template),
                                       limits=limits())
        if matcher.is_error():
            raise InvalidParameter("grammar", matcher.get_error())
        matcher.compute_bitmask()  # llguidance compiles lazily: pay it now, not mid-batch
        return matcher

    def fill(self, seqs: list[Sequence], out: torch.Tensor | None = None) -> torch.Tensor:
        """[len(seqs), words] int32 (`out` when given: contiguous, on the CPU): row j is the
        mask of seqs[j] (each constrained) in its matcher's current state. Safe on any one
        thread at a time, with the GIL dropped while it fills, provided no other thread
        touches these matchers meanwhile."""
        start = time.perf_counter()
        bits = out if out is not None else torch.empty((len(seqs), self.words),
                                                       dtype=torch.int32)
        self._fill([s.matcher for s in seqs], bits, [s.grammar_lane for s in seqs])
        self.stats.mask_seconds += time.perf_counter() - start
        return bits

    @property
    def words(self) -> int:
        """int32 words of one row of the bitmask."""
        return (self.vocab_size + 31) // 32

    def _fill(self, matchers: list[Any], bits: torch.Tensor, lanes: list[int] | None = None
              ) -> None:
        """Row j of `bits` (int32, contiguous, on the CPU) gets matchers[j]'s mask; `lanes[j]`
        is matchers[j]'s lane. The rows go to the executor lane by lane (see Lanes). The
        executor's own call, not `llguidance.torch`'s wrapper: importing that module
        TorchScript-compiles helpers for ~2 s holding the GIL, which stalls the engine loop."""
        rows, words = bits.shape
        order = range(rows) if lanes is None else sorted(range(rows), key=lanes.__getitem__)
        self._executor.unsafe_compute_mask_ptr(
            [(matchers[j], j) for j in order], bits.data_ptr(), words * 4, rows)

    def advance(self, seqs: list[Sequence], tokens: list[int]) -> list[bool]:
        """Feed each sequence its sampled token; per sequence, True when its grammar is
        complete, or broken: then `seq.grammar_error` says why (a parser that outgrew
        llguidance's limits, or a token the mask should have forbidden), and the engine fails
        the request rather than call the text complete. Unconstrained sequences get False. A
        plain loop: the executor's `consume_token_par` was slower for 64 rows here (0.16
        against 0.10-0.14 ms)."""
        done = [False] * len(seqs)
        for i, (seq, token) in enumerate(zip(seqs, tokens, strict=True)):
            m = seq.matcher
            if m is not None:
                done[i] = not m.consume_token(token) or m.is_stopped()
                if done[i] and m.is_error():
                    seq.grammar_error = _first_line(m.get_error())
                    self._forget(seq.params)
        return done

    def _forget(self, params: SamplingParams) -> None:
        """Drop a grammar whose parser broke (a state past llguidance's limits, which every
        sequence of it would reach again): its matchers may hold hundreds of MB of lexer
        states, and a cache of such grammars must not keep them."""
        entry = self._cache.pop(_key(params), None)
        if entry is not None:
            self._spares -= len(entry.pristine) - 1


def _key(params: SamplingParams) -> str:
    return hashlib.sha256(f"{params.grammar_kind}\0{params.grammar}".encode()).hexdigest()


def _first_line(error: str) -> str:
    """llguidance's error without the parser state it appends (many lines, the grammar)."""
    return error.strip().splitlines()[0] if error.strip() else "the grammar's parser failed"
