"""The model runner: turns a scheduled batch into tensors, runs the model, returns logits.

It owns the KV pool tensor `[layers, 2, blocks, block_size, kv_heads, head_dim]` and applies
the KV manager's pending copy-on-write copies before each forward. Only the last token of a
sequence whose known tokens are all computed after this step is sent through the LM head.

Tensor parallelism: the pool holds this rank's KV heads (`model.kv_heads`), and `plan_hook`
(set on rank 0 by tp_runner.py) is called once per step with the step's device inputs, after
they are final and before the forward, so the other ranks can run the same step.
"""

from __future__ import annotations

import numpy as np
import torch

from .attention import AttentionBackend, AttentionMetadata
from .config import ModelConfig
from .model import LlamaForCausalLM
from .scheduler import ScheduledBatch


def kv_bytes_per_block(cfg: ModelConfig, block_size: int, dtype: torch.dtype,
                       kv_heads: int | None = None) -> int:
    """Bytes of one block in the pool; `kv_heads`: this rank's (None: all of the model's)."""
    elem = torch.tensor([], dtype=dtype).element_size()
    heads = cfg.num_kv_heads if kv_heads is None else kv_heads
    return cfg.num_layers * 2 * block_size * heads * cfg.head_dim * elem


class ModelRunner:
    def __init__(
        self,
        model: LlamaForCausalLM,
        backend: AttentionBackend,
        num_blocks: int,
        block_size: int,
        device: torch.device,
        dtype: torch.dtype,
    ):
        cfg = model.config
        self.model = model
        self.backend = backend
        self.block_size = block_size
        self.device = device
        # `dtype` is the pool's (float8 e4m3 for kv_cache_dtype="fp8"), not always the model's.
        # Zeroed, not empty: masked-out pool entries still enter the matmuls of the CPU path,
        # and a NaN there would poison the row.
        self.kv_cache = torch.zeros(
            cfg.num_layers,
            2,
            num_blocks,
            block_size,
            model.kv_heads,
            cfg.head_dim,
            dtype=dtype,
            device=device,
        )
        self.decode_hook = None  # set by the CUDA graph runner: (ids, pos, meta) -> hidden
        self.plan_hook = None  # tensor parallelism: (ids, pos, meta, sample rows) -> None

    def copy_blocks(self, copies: list[tuple[int, int]]) -> None:
        if copies:
            src = torch.tensor([s for s, _ in copies], device=self.device)
            dst = torch.tensor([d for _, d in copies], device=self.device)
            # fp8 pools are copied as bytes: indexing kernels need not support float8.
            pool = self.kv_cache.view(torch.uint8) if self.kv_cache.element_size() == 1 \
                else self.kv_cache
            pool[:, :, dst] = pool[:, :, src]

    def prepare(
        self, batch: ScheduledBatch
    ) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata, list[int]]:
        """Flat inputs for the batch, and the row of each sequence's last new token."""
        bs = self.block_size
        ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        starts = [0]
        seq_lens: list[int] = []
        for seq, n in zip(batch.seqs, batch.num_tokens, strict=True):
            start, table = seq.num_computed_tokens, seq.block_table
            ids.extend(seq.token_ids[start : start + n])
            positions.extend(range(start, start + n))
            slots.extend(table[p // bs] * bs + p % bs for p in range(start, start + n))
            starts.append(starts[-1] + n)
            seq_lens.append(start + n)
        # Hot path: every index array goes into one host buffer and crosses to the device in
        # one copy (not five); the block table is filled row by row in numpy, not from a
        # nested Python list.
        n_tok, n_seq = len(ids), len(batch.seqs)
        width = max(len(s.block_table) for s in batch.seqs)
        tables = np.zeros((n_seq, width), dtype=np.int64)
        for i, s in enumerate(batch.seqs):
            tables[i, : len(s.block_table)] = s.block_table
        host = np.concatenate(
            [np.asarray(a, dtype=np.int64) for a in (ids, positions, slots, starts, seq_lens)]
            + [tables.ravel()]
        )
        buf = torch.from_numpy(host).to(self.device)
        cut = np.cumsum([0, n_tok, n_tok, n_tok, n_seq + 1, n_seq]).tolist()
        input_ids, pos, slot_mapping = (buf[cut[i] : cut[i + 1]] for i in range(3))
        meta = AttentionMetadata(
            slot_mapping=slot_mapping,
            query_start_loc=buf[cut[3] : cut[4]].to(torch.int32),
            seq_lens=buf[cut[4] : cut[5]].to(torch.int32),
            block_tables=buf[cut[5] :].view(n_seq, width).to(torch.int32),
            max_query_len=max(batch.num_tokens),
            max_seq_len=max(seq_lens),
        )
        return input_ids, pos, meta, [e - 1 for e in starts[1:]]

    @torch.inference_mode()
    def execute(self, batch: ScheduledBatch, sample_rows: list[int]) -> torch.Tensor:
        """Run one step; logits `[len(sample_rows), vocab]` (float32) for the given batch rows."""
        input_ids, positions, meta, last_rows = self.prepare(batch)
        # Copied before the forward is queued: a blocking host-to-device copy after it would
        # wait for it, and the engine builds grammar masks on the CPU while the GPU computes.
        rows = torch.tensor([last_rows[i] for i in sample_rows], device=self.device)
        if self.plan_hook is not None:
            self.plan_hook(input_ids, positions, meta, rows)
        hidden = self.forward(input_ids, positions, meta)
        if not sample_rows:
            return hidden.new_empty(0, self.model.config.vocab_size, dtype=torch.float32)
        return self.model.compute_logits(hidden[rows])

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        """Hidden states of a flat batch: a captured CUDA graph for a pure-decode step when
        there is one, else the model eagerly."""
        if self.decode_hook is not None and meta.is_decode:
            return self.decode_hook(input_ids, positions, meta)
        self.backend.begin_step(meta)
        return self.model(input_ids, positions, self.kv_cache, meta)
