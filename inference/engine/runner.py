"""The model runner: turns a scheduled batch into tensors, runs the model, returns logits.

It owns the KV pool tensor `[layers, 2, blocks, block_size, kv_heads, head_dim]` and applies
the KV manager's pending copy-on-write copies before each forward. Only the last token of a
sequence whose known tokens are all computed after this step is sent through the LM head;
every row's final hidden state stays in `last_hidden` until the next step (embeddings pool it).

Tensor parallelism: the pool holds this rank's KV heads (`model.kv_heads`), and `plan_hook`
(set on rank 0 by tp_runner.py) is called once per step with the step's device inputs, after
they are final (placeholders resolved) and before the forward, so the other ranks can run the
same step.
"""

from __future__ import annotations

import numpy as np
import torch

from .attention import AttentionBackend, AttentionMetadata
from .block_tables import BlockTables
from .config import ModelConfig
from .inflight import Placeholders
from .model import DecoderLM
from .scheduler import ScheduledBatch
from .sequence import Sequence
from .transfer import I32, I64, Staging, to_device


def kv_bytes_per_block(cfg: ModelConfig, block_size: int, dtype: torch.dtype,
                       kv_heads: int | None = None) -> int:
    """Bytes of one block in the pool; `kv_heads`: this rank's (None: all of the model's)."""
    elem = torch.tensor([], dtype=dtype).element_size()
    heads = cfg.num_kv_heads if kv_heads is None else kv_heads
    return cfg.num_layers * 2 * block_size * heads * cfg.head_dim * elem


_FEW = 16  # up to this many sequences, a step's tables and slots come from their lists


def _few_tables(seqs: list[Sequence]) -> np.ndarray:
    """The block tables of a few sequences as one zero-padded `[seqs, widest]` int32 array,
    row by row from their lists: at batch 1 this costs less than numpy's per-call overhead on
    a gather (block_tables.py) and the slot arithmetic after it."""
    lens = [len(s.block_table) for s in seqs]
    tables = np.zeros((len(seqs), max(lens)), dtype=np.int32)
    for i, s in enumerate(seqs):
        tables[i, : lens[i]] = s.block_table
    return tables


class ModelRunner:
    def __init__(
        self,
        model: DecoderLM,
        backend: AttentionBackend,
        num_blocks: int,
        block_size: int,
        device: torch.device,
        dtype: torch.dtype,
        tables: BlockTables,
    ):
        """`tables`: the KV manager's block tables, which `prepare` reads."""
        cfg = model.config
        self.model = model
        self.backend = backend
        self.block_size = block_size
        self.tables = tables
        self.staging = Staging(device)  # a step's inputs to the device (prepare)
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
        self.graph_hook = None  # set by the CUDA graph runner: (ids, pos, meta) -> hidden
        # The last step's final hidden states, [tokens, hidden] in batch order (final norm
        # applied): prompt logprobs (prompt_logprobs.py) and embeddings (embedding.py) read it.
        self.last_hidden: torch.Tensor | None = None
        self.plan_hook = None  # tensor parallelism: (ids, pos, meta, sample rows) -> None

    def copy_blocks(self, copies: list[tuple[int, int]]) -> None:
        if copies:
            src = to_device([s for s, _ in copies], torch.long, self.device)
            dst = to_device([d for _, d in copies], torch.long, self.device)
            # fp8 pools are copied as bytes: indexing kernels need not support float8.
            pool = self.kv_cache.view(torch.uint8) if self.kv_cache.element_size() == 1 \
                else self.kv_cache
            pool[:, :, dst] = pool[:, :, src]

    def prepare(
        self, batch: ScheduledBatch, sample_rows: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata, torch.Tensor,
               Placeholders | None]:
        """Flat inputs for the batch, the row of each sampled sequence's last new token, and
        where the inputs hold placeholders (inflight.py), None when none does."""
        # Hot path: every index array goes into one pinned buffer, in the dtype its reader
        # wants, and crosses to the device in one non-blocking copy (transfer.Staging): no
        # conversion on the device, nothing that waits for the GPU.
        seqs, n_seq, bs = batch.seqs, len(batch.seqs), self.block_size
        # Decodes come first: a list comprehension per input over them, no appends, and
        # (past a few rows) their slots in numpy over the block tables kept in place
        # (block_tables.py); then the prompt chunks (if any), per sequence in numpy.
        few = n_seq <= _FEW
        tables = _few_tables(seqs) if few else self.tables.gather(seqs)
        decodes = n_seq if max(batch.num_tokens) == 1 else batch.leading_decodes()
        head = seqs if decodes == n_seq else seqs[:decodes]
        at = [s.num_computed_tokens for s in head]
        ids = [s.token_ids[p] for s, p in zip(head, at, strict=True)]
        positions: list[int] | np.ndarray = at
        if few:
            slots: list[int] | np.ndarray = [s.block_table[p // bs] * bs + p % bs
                                             for s, p in zip(head, at, strict=True)]
        else:
            positions = np.asarray(at, dtype=np.int64)
            slots = tables[np.arange(decodes), positions // bs] * np.int64(bs) + positions % bs
        starts, seq_lens = list(range(decodes + 1)), [p + 1 for p in at]
        if decodes < n_seq:
            pos_parts, slot_parts = self._chunk_inputs(
                seqs[decodes:], batch.num_tokens[decodes:], tables[decodes:], ids, starts,
                seq_lens)
            positions = np.concatenate([np.asarray(positions, dtype=np.int64), *pos_parts])
            slots = np.concatenate([np.asarray(slots, dtype=np.int64), *slot_parts])
        rows = [starts[i + 1] - 1 for i in sample_rows]
        # A placeholder is only ever a sequence's last token (inflight.py): look there.
        holes = [e - 1 for e in starts[1:] if ids[e - 1] < 0]
        parts = [(ids, I64), (positions, I64), (slots, I64), (rows, I64), (starts, I32),
                 (seq_lens, I32), (tables.ravel(), I32)]
        if holes:
            parts += [(holes, I64), ([-ids[h] - 1 for h in holes], I64)]
        input_ids, pos, slot_mapping, row_idx, query_starts, lens, flat_tables, *filled = \
            self.staging.send(parts)
        meta = AttentionMetadata(
            slot_mapping=slot_mapping,
            query_start_loc=query_starts,
            seq_lens=lens,
            block_tables=flat_tables.view(n_seq, tables.shape[1]),
            max_query_len=max(batch.num_tokens),
            max_seq_len=max(seq_lens),
            num_decodes=decodes,
            query_lens=batch.num_tokens,
        )
        return input_ids, pos, meta, row_idx, Placeholders(*filled) if filled else None

    def _chunk_inputs(self, seqs: list[Sequence], num_tokens: list[int], tables: np.ndarray,
                      ids: list[int], starts: list[int], seq_lens: list[int]
                      ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """For sequences that compute prompt chunks (`tables`: their block tables, a row
        each): append their token ids, query starts and sequence lengths to the lists given;
        return their positions and slots, per sequence in numpy, not per token."""
        bs = self.block_size
        pos_parts, slot_parts = [], []
        for seq, n, table in zip(seqs, num_tokens, tables, strict=True):
            start = seq.num_computed_tokens
            ids.extend(seq.token_ids[start : start + n])
            p = np.arange(start, start + n)
            pos_parts.append(p)
            slot_parts.append(table[p // bs] * np.int64(bs) + p % bs)
            starts.append(starts[-1] + n)
            seq_lens.append(start + n)
        return pos_parts, slot_parts

    @torch.inference_mode()
    def execute(
        self, batch: ScheduledBatch, sample_rows: list[int],
        in_flight_tokens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Queue one step; logits `[len(sample_rows), vocab]` (float32) for the given batch
        rows. Placeholder inputs read their token from `in_flight_tokens` on the device.
        Nothing here waits for the GPU."""
        input_ids, positions, meta, rows, holes = self.prepare(batch, sample_rows)
        if holes is not None:
            assert in_flight_tokens is not None, "a placeholder input with no step in flight"
            holes.fill(input_ids, in_flight_tokens)
        if self.plan_hook is not None:
            self.plan_hook(input_ids, positions, meta, rows)
        hidden = self.forward(input_ids, positions, meta)
        self.last_hidden = hidden
        if not sample_rows:
            return hidden.new_empty(0, self.model.config.vocab_size, dtype=torch.float32)
        if len(sample_rows) == hidden.shape[0]:  # one token a sequence, every one sampled:
            return self.model.compute_logits(hidden)  # the rows are 0..n-1, no gather
        return self.model.compute_logits(hidden[rows])

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        """Hidden states of a flat batch: through the CUDA graphs when there are (they run
        the step eagerly when none fits it), else the model eagerly."""
        if self.graph_hook is not None:
            return self.graph_hook(input_ids, positions, meta)
        self.backend.begin_step(meta)
        return self.model(input_ids, positions, self.kv_cache, meta)
