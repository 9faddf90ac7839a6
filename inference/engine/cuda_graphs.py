"""CUDA graphs for decode steps and for small steps that compute prompt tokens.

Launching a step's kernels one by one costs the host ~15-30 us each: a 30-layer model's step
is ~400 launches, 10-17 ms of host time where the GPU needs 1-2 for a 200-token prompt. A
replayed graph launches them all at once. Two families, captured once at start-up, all
sharing one memory pool (captured largest first, so the smaller graphs reuse its blocks):

- Decode graphs, one per batch size of a ladder (1, 2, 4, 8, then every 8 up to
  `max_num_seqs`) and span: one token per sequence, the split-K decode kernel. A span is the
  longest context a graph's attention was launched for; the backend names them
  (`decode_spans`): `max_model_len`, and a short one where short contexts launch fewer
  kernels (one split, no merge: `decode_splits.py`). A step replays the shortest span that
  holds its longest context.
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

A step that no single graph holds (more sequences than a mixed graph, or more prompt tokens
than its largest bucket: prompts arriving among many streams) replays several: a decode
graph for its leading decode rows, then up to `MAX_TAIL_GRAPHS` mixed graphs for the rest,
whole sequences packed in order, the outputs joined in one buffer. Rows are independent
outside attention and attention reads only the pool, so splitting a step at sequence
boundaries computes what the whole step would. A step no plan fits (a prompt chunk longer
than the largest bucket, or more chunks than the graphs hold) runs eagerly: such steps are
rare (a long prompt, a burst of arrivals), and a large model's GPU work outweighs their
launches.

Invariants a captured graph relies on:
- the attention metadata's `max_seq_len` is pinned to the graph's span in decode graphs
  (`max_model_len` in mixed ones), so the decode kernel's split count (and grid) is the same
  on every replay, and a step replays a span no shorter than its longest context; a mixed
  graph's `max_query_len` is pinned to its bucket, which fixes the prefill kernel's grid and
  tiles;
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
MAX_TAIL_GRAPHS = 8  # mixed graphs one step may replay after its decode graph (8 x 512 tokens)


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
    """One graph: `tokens` rows, `seqs` sequences, decode (query length 1) or mixed, for
    contexts of at most `span` tokens."""

    tokens: int
    seqs: int
    decode: bool
    span: int


@dataclass(frozen=True)
class _Part:
    """One replay of a step's plan: `shape` over the step's sequences `first..end`, whose
    rows are `row..row_end`."""

    shape: _Shape
    first: int
    end: int
    row: int
    row_end: int


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
        kv_heads, head_dim = kv_cache.shape[-2:]
        self.spans = {b: backend.decode_spans(b, kv_heads, head_dim, max_model_len)
                      for b in self.sizes}
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
        self.mixed_replays = 0  # mixed graphs replayed (each computes prompt tokens)
        self.split_replays = 0  # steps that replayed more than one graph
        self.eager_steps = 0  # steps no plan fitted

    def _meta(self, shape: _Shape) -> AttentionMetadata:
        s = shape.seqs
        starts = self.decode_starts if shape.decode else self.mixed_starts
        return AttentionMetadata(
            slot_mapping=self.slot_mapping[: shape.tokens],
            query_start_loc=starts[: s + 1],
            seq_lens=self.seq_lens[:s],
            block_tables=self.block_tables[:s],
            max_query_len=1 if shape.decode else shape.tokens,
            max_seq_len=shape.span,
        )

    def _forward(self, shape: _Shape) -> torch.Tensor:
        meta = self._meta(shape)
        self.backend.begin_step(meta)
        n = shape.tokens
        return self.model(self.input_ids[:n], self.positions[:n], self.kv_cache, meta)

    def _shapes(self) -> list[_Shape]:
        """Every graph to capture, largest first (the pool is sized by the first)."""
        shapes = [_Shape(b, b, True, span) for b in self.sizes for span in self.spans[b]]
        shapes += [self._mixed(t) for t in self.buckets]
        return sorted(shapes, key=lambda s: (s.tokens, s.decode, s.span), reverse=True)

    def _mixed(self, tokens: int) -> _Shape:
        return _Shape(tokens, self.mixed_seqs, False, self.max_model_len)

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
            out = self.outputs[_Shape(self.sizes[-1], self.sizes[-1], True,
                                      self.max_model_len)]
            rows = self.sizes[-1] + MAX_TAIL_GRAPHS * self.buckets[-1]
            self.joined = out.new_empty(rows, *out.shape[1:])
        torch.cuda.synchronize()
        self.capture_seconds = time.perf_counter() - t0
        log.info(
            "captured %d decode graphs (batch 1..%d) and %d mixed graphs (up to %d tokens) "
            "in %.2f s", sum(map(len, self.spans.values())), self.sizes[-1], len(self.buckets),
            self.buckets[-1] if self.buckets else 0, self.capture_seconds,
        )
        return self.capture_seconds

    def fits(self, query_lens: list[int], decodes: int) -> bool:
        """Whether a step whose sequences compute `query_lens` tokens each, the first
        `decodes` of them one, replays graphs rather than running eagerly (whatever their
        contexts: every decode batch size has a graph of span `max_model_len`)."""
        return bool(self._plan(query_lens, decodes, self.max_model_len))

    def _plan(self, query_lens: list[int], decodes: int, longest: int) -> tuple[_Part, ...]:
        """The replays that run a step whose longest context is `longest` tokens: one graph
        for all of it; or a decode graph for the leading `decodes` rows (if any) and up to
        `MAX_TAIL_GRAPHS` mixed graphs for the rest; or none (eager)."""
        if not self.graphs:
            return ()
        n, seqs = sum(query_lens), len(query_lens)
        whole = self._whole(n, seqs, decodes == seqs, longest)
        if whole:
            return whole
        if decodes == seqs or not self.buckets:
            return ()
        plan = []
        if decodes:
            head = self._fit(decodes, decodes, True, longest)
            if head is None:
                return ()
            plan.append(_Part(head, 0, decodes, 0, decodes))
        tail = self._pack(query_lens, decodes)
        return (*plan, *tail) if tail else ()

    def _whole(self, n: int, seqs: int, decode: bool, longest: int) -> tuple[_Part, ...]:
        """One graph for the whole step of `n` rows over `seqs` sequences, or none."""
        shape = self._fit(n, seqs, decode, longest)
        return () if shape is None else (_Part(shape, 0, seqs, 0, n),)

    def _pack(self, query_lens: list[int], first: int) -> list[_Part]:
        """Sequences `first..` (whose rows start at row `first`), whole, in order, in as few
        mixed graphs as hold them; [] when a chunk outgrows the largest bucket or the
        sequences need more than `MAX_TAIL_GRAPHS` graphs."""
        cap, parts = self.buckets[-1], []
        start, row, tokens = first, first, 0
        for i in range(first, len(query_lens) + 1):
            q = query_lens[i] if i < len(query_lens) else 0
            if i == len(query_lens) or tokens + q > cap or i - start == self.mixed_seqs:
                t = next(t for t in self.buckets if t >= tokens)
                parts.append(_Part(self._mixed(t), start, i, row, row + tokens))
                if len(parts) > MAX_TAIL_GRAPHS or q > cap:
                    return []
                start, row, tokens = i, row + tokens, 0
            tokens += q
        return parts

    def _fit(self, n: int, seqs: int, decode: bool, longest: int) -> _Shape | None:
        """The graph for `n` rows over `seqs` sequences whose longest context is `longest`
        tokens: the smallest that holds them, of the shortest span that holds that."""
        if not self.graphs:
            return None
        if decode:
            bs = next((b for b in self.sizes if b >= n), None)
            if bs is None:
                return None
            span = next((s for s in self.spans[bs] if s >= longest), None)
            return None if span is None else _Shape(bs, bs, True, span)
        if seqs > self.mixed_seqs:
            return None
        t = next((t for t in self.buckets if t >= n), None)
        return None if t is None else self._mixed(t)

    def replay_decode(self, batch: int, longest: int) -> torch.Tensor:
        """Replay the decode graph that holds `batch` rows with contexts of at most `longest`
        tokens on whatever its buffers hold (the GPU work of one decode step and nothing else,
        for benchmarks); its first `batch` output rows."""
        shape = self._fit(batch, batch, True, longest)
        if shape is None:
            raise ValueError(f"no decode graph holds {batch} rows of {longest} tokens")
        self.graphs[shape].replay()
        return self.outputs[shape][:batch]

    def run(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        n, seqs = input_ids.shape[0], meta.seq_lens.shape[0]
        if meta.is_decode or meta.query_lens is None:  # decodes (hot path), or no lengths:
            plan = self._whole(n, seqs, meta.is_decode, meta.max_seq_len)  # one graph or none
        else:
            plan = self._plan(meta.query_lens, meta.num_decodes, meta.max_seq_len)
        if not plan:
            self.eager_steps += 1
            self.backend.begin_step(meta)
            return self.model(input_ids, positions, self.kv_cache, meta)
        if len(plan) == 1:
            return self._replay(plan[0], input_ids, positions, meta)
        # Hot path: the graphs share one memory pool, so each one's hidden states are copied
        # out before the next replays over them (all in stream order).
        joined = self.joined
        assert joined is not None
        for part in plan:
            joined[part.row : part.row_end].copy_(
                self._replay(part, input_ids, positions, meta))
        self.split_replays += 1
        return joined[:n]

    def _replay(self, part: _Part, input_ids: torch.Tensor, positions: torch.Tensor,
                meta: AttentionMetadata) -> torch.Tensor:
        """Replay `part.shape` on its sequences and rows of the step; the graph's output
        rows. Device-to-device copies into the static buffers."""
        shape, first, end, row = part.shape, part.first, part.end, part.row
        n, seqs = part.row_end - row, end - first
        self.input_ids[:n].copy_(input_ids[row : part.row_end])
        self.positions[:n].copy_(positions[row : part.row_end])
        self.slot_mapping[:n].copy_(meta.slot_mapping[row : part.row_end])
        self.seq_lens[:seqs].copy_(meta.seq_lens[first:end])
        width = meta.block_tables.shape[1]
        self.block_tables[:seqs, :width].copy_(meta.block_tables[first:end])
        if shape.tokens > n:
            self.slot_mapping[n : shape.tokens].fill_(-1)
        if shape.seqs > seqs:
            self.seq_lens[seqs : shape.seqs].fill_(0)
        if not shape.decode:  # padding sequences start (and end) after the last real row
            torch.sub(meta.query_start_loc[first : end + 1], row,
                      out=self.mixed_starts[: seqs + 1])
            self.mixed_starts[seqs + 1 : shape.seqs + 1].fill_(n)
            self.mixed_replays += 1
        self.graphs[shape].replay()
        return self.outputs[shape][:n]
