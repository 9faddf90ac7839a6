"""CUDA graphs for the decode step: captured once at start-up, replayed every decode step.

One graph per batch size of a ladder (1, 2, 4, 8, then every 8 up to `max_num_seqs`), all
sharing one memory pool (captured largest first, so the smaller graphs reuse its blocks). Every
graph reads the same static buffers: token ids, positions, slot mapping, sequence lengths,
block tables (`max_model_len / block_size` columns) and the query starts (`0..bs`, fixed for
a pure-decode step). A step of n sequences copies its inputs into the first n rows, pads the
rest to the captured size (slot -1: write nothing; length 0: attend to nothing) and replays
the graph of the next size up. Above the ladder the step runs eagerly.

Invariants a captured graph relies on:
- the attention metadata's `max_seq_len` is pinned to `max_model_len`, so the decode kernel's
  split count (and grid) is the same on every replay;
- the KV pool tensor and the model's parameters never move after capture;
- the hidden states returned by `run` live in the graph pool: read them before the next step.
"""

from __future__ import annotations

import logging
import math
import time

import torch

from .attention import AttentionBackend, AttentionMetadata

log = logging.getLogger("kvmesh.engine.cuda_graphs")


def batch_size_ladder(max_num_seqs: int) -> list[int]:
    sizes = [b for b in (1, 2, 4, 8) if b <= max_num_seqs]
    sizes += list(range(16, max_num_seqs + 1, 8))
    if sizes[-1] < max_num_seqs:
        sizes.append(max_num_seqs)
    return sizes


class CudaGraphDecoder:
    """`run(input_ids, positions, meta) -> hidden` for a pure-decode step, through graphs."""

    def __init__(
        self,
        model: torch.nn.Module,
        backend: AttentionBackend,
        kv_cache: torch.Tensor,
        max_num_seqs: int,
        max_model_len: int,
        block_size: int,
    ):
        self.model = model
        self.backend = backend
        self.kv_cache = kv_cache
        self.max_model_len = max_model_len
        self.sizes = batch_size_ladder(max_num_seqs)
        max_bs = self.sizes[-1]
        device = kv_cache.device
        width = math.ceil(max_model_len / block_size)
        self.input_ids = torch.zeros(max_bs, dtype=torch.long, device=device)
        self.positions = torch.zeros(max_bs, dtype=torch.long, device=device)
        self.slot_mapping = torch.full((max_bs,), -1, dtype=torch.long, device=device)
        self.seq_lens = torch.zeros(max_bs, dtype=torch.int32, device=device)
        self.block_tables = torch.zeros(max_bs, width, dtype=torch.int32, device=device)
        self.query_start_loc = torch.arange(max_bs + 1, dtype=torch.int32, device=device)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        self.capture_seconds = 0.0

    def _meta(self, bs: int) -> AttentionMetadata:
        return AttentionMetadata(
            slot_mapping=self.slot_mapping[:bs],
            query_start_loc=self.query_start_loc[: bs + 1],
            seq_lens=self.seq_lens[:bs],
            block_tables=self.block_tables[:bs],
            max_query_len=1,
            max_seq_len=self.max_model_len,
        )

    def _forward(self, bs: int) -> torch.Tensor:
        meta = self._meta(bs)
        self.backend.begin_step(meta)
        return self.model(self.input_ids[:bs], self.positions[:bs], self.kv_cache, meta)

    @torch.inference_mode()
    def capture(self) -> float:
        """Capture every size of the ladder; returns (and logs) the seconds it took."""
        t0 = time.perf_counter()
        torch.cuda.synchronize()
        pool = None
        for bs in reversed(self.sizes):
            self._forward(bs)  # warm-up: compiles kernels, settles cuBLAS workspaces
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self.outputs[bs] = self._forward(bs)
            pool = graph.pool()
            self.graphs[bs] = graph
        torch.cuda.synchronize()
        self.capture_seconds = time.perf_counter() - t0
        log.info(
            "captured %d decode graphs (batch 1..%d) in %.2f s",
            len(self.sizes), self.sizes[-1], self.capture_seconds,
        )
        return self.capture_seconds

    def run(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        n = input_ids.shape[0]
        bs = next((b for b in self.sizes if b >= n), None)
        if bs is None or not self.graphs:
            self.backend.begin_step(meta)
            return self.model(input_ids, positions, self.kv_cache, meta)
        # Hot path: device-to-device copies into the static buffers, then one replay.
        self.input_ids[:n].copy_(input_ids)
        self.positions[:n].copy_(positions)
        self.slot_mapping[:n].copy_(meta.slot_mapping)
        self.seq_lens[:n].copy_(meta.seq_lens)
        width = meta.block_tables.shape[1]
        self.block_tables[:n, :width].copy_(meta.block_tables)
        if bs > n:
            self.slot_mapping[n:bs].fill_(-1)
            self.seq_lens[n:bs].fill_(0)
        self.graphs[bs].replay()
        return self.outputs[bs][:n]
