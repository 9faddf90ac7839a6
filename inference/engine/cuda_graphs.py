"""CUDA graphs for decode steps and for small steps that compute prompt tokens.

Launching a step's kernels one by one costs the host ~15-30 us each: a 30-layer model's step
is ~400 launches, 10-17 ms of host time where the GPU needs 1-2 for a 200-token prompt. A
replayed graph launches them all at once. Two families, captured once at start-up, all
sharing one memory pool (captured largest first, so the smaller graphs reuse its blocks):

- Decode graphs, one per batch size of a ladder (1, 2, 4, 8, then every 8 up to
  `max_num_seqs`): one token per sequence, the split-K decode kernel.
- Mixed graphs, one per token bucket (16, 32, 64, .. up to `max_mixed_tokens`), each for up to
  `MIXED_SEQS` sequences: prefill chunks, prefix-cache hits and decode rows in one step, the
  varlen prefill kernel. Its grid is `(tokens / BLOCK_M, MIXED_SEQS, heads)` whatever the
  step holds: padding sequences (no query rows, length 0) and tiles past a sequence's rows do
  no work.

Every graph reads the same static buffers: token ids, positions, slot mapping, sequence
lengths, block tables (`max_model_len / block_size` columns) and query starts (a fixed
`0..bs` for decode graphs, written per step for mixed ones). A step of n tokens copies its
inputs into the first rows, pads the rest (slot -1: write nothing; length 0: attend to
nothing) and replays the graph of the next size up.

A step of more sequences than a mixed graph holds, most of them decodes (a few prompts
arriving among many streams), replays two graphs: a decode graph for its leading decode
rows, then a mixed graph for the rest, the two outputs joined in one buffer. Rows are
independent outside attention and attention reads only the pool, so splitting a step at a
sequence boundary computes what the whole step would. A step no graph plan fits runs eagerly.

Invariants a captured graph relies on:
- the attention metadata's `max_seq_len` is pinned to `max_model_len` in decode graphs, so
  the decode kernel's split count (and grid) is the same on every replay; a mixed graph's
  `max_query_len` is pinned to its bucket, which fixes the prefill kernel's grid and tiles;
- padding token rows belong to no sequence: their outputs are garbage that never reaches a
  real row (every layer is row-wise outside attention, and attention reads only the pool);
- the KV pool tensor and the model's parameters never move after capture;
- the hidden states returned by `run` live in the graph pool (or the join buffer): read them
  before the next step.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import torch

from .attention import AttentionBackend, AttentionMetadata

log = logging.getLogger("kvmesh.engine.cuda_graphs")

MIXED_SEQS = 64  # sequences a mixed graph holds: more would add empty programs to every layer


def batch_size_ladder(max_num_seqs: int) -> list[int]:
    sizes = [b for b in (1, 2, 4, 8) if b <= max_num_seqs]
    sizes += list(range(16, max_num_seqs + 1, 8))
    if sizes[-1] < max_num_seqs:
        sizes.append(max_num_seqs)
    return sizes


def token_buckets(max_tokens: int) -> list[int]:
    """16, 32, 64, .. up to `max_tokens` (none below 16)."""
    buckets, t = [], 16
    while t <= max_tokens:
        buckets.append(t)
        t *= 2
    return buckets


@dataclass(frozen=True)
class _Shape:
    """One graph: `tokens` rows, `seqs` sequences, decode (query length 1) or mixed."""

    tokens: int
    seqs: int
    decode: bool


class CudaGraphDecoder:
    """`run(input_ids, positions, meta) -> hidden` for a step, through a graph when one fits.

    `max_mixed_tokens` 0: decode graphs only."""

    def __init__(
        self,
        model: torch.nn.Module,
        backend: AttentionBackend,
        kv_cache: torch.Tensor,
        max_num_seqs: int,
        max_model_len: int,
        block_size: int,
        max_mixed_tokens: int = 0,
    ):
        self.model = model
        self.backend = backend
        self.kv_cache = kv_cache
        self.max_model_len = max_model_len
        self.sizes = batch_size_ladder(max_num_seqs)
        self.buckets = token_buckets(max_mixed_tokens)
        self.mixed_seqs = min(MIXED_SEQS, max_num_seqs)
        rows = max([self.sizes[-1], *self.buckets])
        seqs = max(self.sizes[-1], self.mixed_seqs)
        device = kv_cache.device
        width = math.ceil(max_model_len / block_size)
        self.input_ids = torch.zeros(rows, dtype=torch.long, device=device)
        self.positions = torch.zeros(rows, dtype=torch.long, device=device)
        self.slot_mapping = torch.full((rows,), -1, dtype=torch.long, device=device)
        self.seq_lens = torch.zeros(seqs, dtype=torch.int32, device=device)
        self.block_tables = torch.zeros(seqs, width, dtype=torch.int32, device=device)
        self.decode_starts = torch.arange(seqs + 1, dtype=torch.int32, device=device)
        self.mixed_starts = torch.zeros(seqs + 1, dtype=torch.int32, device=device)
        self.graphs: dict[_Shape, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[_Shape, torch.Tensor] = {}
        self.joined: torch.Tensor | None = None  # a split step's hidden states (`capture`)
        self.capture_seconds = 0.0
        self.mixed_replays = 0  # steps that computed prompt tokens through a graph
        self.split_replays = 0  # of which through a decode graph and a mixed graph

    def _meta(self, shape: _Shape) -> AttentionMetadata:
        s = shape.seqs
        starts = self.decode_starts if shape.decode else self.mixed_starts
        return AttentionMetadata(
            slot_mapping=self.slot_mapping[: shape.tokens],
            query_start_loc=starts[: s + 1],
            seq_lens=self.seq_lens[:s],
            block_tables=self.block_tables[:s],
            max_query_len=1 if shape.decode else shape.tokens,
            max_seq_len=self.max_model_len,
        )

    def _forward(self, shape: _Shape) -> torch.Tensor:
        meta = self._meta(shape)
        self.backend.begin_step(meta)
        n = shape.tokens
        return self.model(self.input_ids[:n], self.positions[:n], self.kv_cache, meta)

    def _shapes(self) -> list[_Shape]:
        """Every graph to capture, largest first (the pool is sized by the first)."""
        shapes = [_Shape(b, b, True) for b in self.sizes]
        shapes += [_Shape(t, self.mixed_seqs, False) for t in self.buckets]
        return sorted(shapes, key=lambda s: (s.tokens, s.decode), reverse=True)

    @torch.inference_mode()
    def capture(self) -> float:
        """Capture every graph; returns (and logs) the seconds it took."""
        t0 = time.perf_counter()
        torch.cuda.synchronize()
        pool = None
        for shape in self._shapes():
            self._forward(shape)  # warm-up: compiles kernels, settles cuBLAS workspaces
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self.outputs[shape] = self._forward(shape)
            pool = graph.pool()
            self.graphs[shape] = graph
        if self.buckets:
            out = self.outputs[_Shape(self.sizes[-1], self.sizes[-1], True)]
            rows = self.sizes[-1] + self.buckets[-1]
            self.joined = out.new_empty(rows, *out.shape[1:])
        torch.cuda.synchronize()
        self.capture_seconds = time.perf_counter() - t0
        log.info(
            "captured %d decode graphs (batch 1..%d) and %d mixed graphs (up to %d tokens) "
            "in %.2f s", len(self.sizes), self.sizes[-1], len(self.buckets),
            self.buckets[-1] if self.buckets else 0, self.capture_seconds,
        )
        return self.capture_seconds

    def fits(self, tokens: int, seqs: int, decodes: int) -> bool:
        """Whether a step of `tokens` rows over `seqs` sequences, the first `decodes` of them
        one row each, replays graphs rather than running eagerly."""
        return bool(self._plan(tokens, seqs, decodes))

    def _plan(self, n: int, seqs: int, decodes: int) -> tuple[_Shape, ...]:
        """The graphs that run a step: one, a decode graph for the leading `decodes` rows and
        a mixed graph for the rest, or none (eager)."""
        whole = self._fit(n, seqs, decodes == seqs == n)
        if whole is not None:
            return (whole,)
        if 0 < decodes < seqs:
            head = self._fit(decodes, decodes, True)
            tail = self._fit(n - decodes, seqs - decodes, False)
            if head is not None and tail is not None:
                return head, tail
        return ()

    def _fit(self, n: int, seqs: int, decode: bool) -> _Shape | None:
        if not self.graphs:
            return None
        if decode:
            bs = next((b for b in self.sizes if b >= n), None)
            return None if bs is None else _Shape(bs, bs, True)
        if seqs > self.mixed_seqs:
            return None
        t = next((t for t in self.buckets if t >= n), None)
        return None if t is None else _Shape(t, self.mixed_seqs, False)

    def replay_decode(self, batch: int) -> torch.Tensor:
        """Replay the decode graph that holds `batch` rows on whatever its buffers hold (the
        GPU work of one decode step and nothing else, for benchmarks); its first `batch`
        output rows."""
        shape = self._fit(batch, batch, True)
        if shape is None:
            raise ValueError(f"no decode graph holds {batch} rows")
        self.graphs[shape].replay()
        return self.outputs[shape][:batch]

    def run(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        n, seqs = input_ids.shape[0], meta.seq_lens.shape[0]
        decodes = seqs if meta.is_decode else meta.num_decodes
        plan = self._plan(n, seqs, decodes)
        if not plan:
            self.backend.begin_step(meta)
            return self.model(input_ids, positions, self.kv_cache, meta)
        if len(plan) == 1:
            return self._replay(plan[0], input_ids, positions, meta, 0, seqs)
        # Hot path: both graphs share one memory pool, so the decode rows' hidden states are
        # copied out before the mixed graph replays over them (all in stream order).
        d, joined = decodes, self.joined
        assert joined is not None
        joined[:d].copy_(self._replay(plan[0], input_ids[:d], positions[:d], meta, 0, d))
        joined[d:n].copy_(self._replay(plan[1], input_ids[d:], positions[d:], meta, d, seqs))
        self.split_replays += 1
        return joined[:n]

    def _replay(self, shape: _Shape, input_ids: torch.Tensor, positions: torch.Tensor,
                meta: AttentionMetadata, first: int, end: int) -> torch.Tensor:
        """Replay `shape` on sequences `first..end` of the step, whose rows start at row
        `first` (every sequence before them is a decode: one row each) and are `input_ids`
        and `positions`; the graph's output rows. Device-to-device copies into the static
        buffers."""
        n, seqs = input_ids.shape[0], end - first
        self.input_ids[:n].copy_(input_ids)
        self.positions[:n].copy_(positions)
        self.slot_mapping[:n].copy_(meta.slot_mapping[first : first + n])
        self.seq_lens[:seqs].copy_(meta.seq_lens[first:end])
        width = meta.block_tables.shape[1]
        self.block_tables[:seqs, :width].copy_(meta.block_tables[first:end])
        if shape.tokens > n:
            self.slot_mapping[n : shape.tokens].fill_(-1)
        if shape.seqs > seqs:
            self.seq_lens[seqs : shape.seqs].fill_(0)
        if not shape.decode:  # padding sequences start (and end) after the last real row
            torch.sub(meta.query_start_loc[first : end + 1], first,
                      out=self.mixed_starts[: seqs + 1])
            self.mixed_starts[seqs + 1 : shape.seqs + 1].fill_(n)
            self.mixed_replays += 1
        self.graphs[shape].replay()
        return self.outputs[shape][:n]
