"""Rank 0's runner in a tensor-parallel engine, and the plan every other rank follows.

Contract:
- Rank 0 alone schedules and samples. For each step its runner sends a `StepPlan` (the sizes
  of the step and its copy-on-write block copies) down every follower's pipe, then broadcasts
  the step's device inputs as one int64 tensor (token ids, positions, slot mapping, query
  starts, sequence lengths, block tables, LM-head rows): one broadcast per step. It does so
  after the inputs are final and before the forward, through `ModelRunner.plan_hook`.
- A follower (tp_follower.py) applies the copies, receives the tensor, `unpack`s it into the
  same inputs and runs the same forward (the same CUDA graph when rank 0 replays one) and the
  same LM head, so the two all-reduces of every layer and the logits gather meet on every rank.
- `make_runner` is the engine's factory: this leader on rank 0 of a group, else the plain
  runner (TP=1, and the followers, which rank 0 drives).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import distributed, tp_launch
from .attention import AttentionBackend, AttentionMetadata
from .block_tables import BlockTables
from .model import DecoderLM
from .runner import ModelRunner


@dataclass(frozen=True)
class StepPlan:
    """What a follower needs before the step's tensor arrives (pickled over a local pipe)."""

    copies: list[tuple[int, int]]  # (src, dst) blocks, applied before the forward
    num_tokens: int
    num_seqs: int
    table_width: int  # block-table columns
    max_query_len: int
    max_seq_len: int
    num_rows: int  # rows through the LM head; 0 = none (the head is skipped)

    @property
    def payload_len(self) -> int:
        return 3 * self.num_tokens + 2 * self.num_seqs + 1 + self.num_seqs * self.table_width \
            + self.num_rows


class TPLeaderRunner(ModelRunner):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._copies: list[tuple[int, int]] = []
        self.plan_hook = self._send_plan

    def copy_blocks(self, copies: list[tuple[int, int]]) -> None:
        self._copies = list(copies)  # sent with the step they precede
        super().copy_blocks(copies)

    def _send_plan(self, input_ids: torch.Tensor, positions: torch.Tensor,
                   meta: AttentionMetadata, rows: torch.Tensor) -> None:
        """Hot path: one pipe message per follower and one broadcast per step."""
        plan = StepPlan(self._copies, input_ids.shape[0], meta.num_seqs,
                        meta.block_tables.shape[1], meta.max_query_len, meta.max_seq_len,
                        rows.shape[0])
        self._copies = []
        tp_launch.send_plan(plan)
        payload = torch.cat([input_ids, positions, meta.slot_mapping,
                             meta.query_start_loc.long(), meta.seq_lens.long(),
                             meta.block_tables.long().view(-1), rows.long()])
        distributed.broadcast(payload)


def unpack(plan: StepPlan, payload: torch.Tensor) -> tuple[
        torch.Tensor, torch.Tensor, AttentionMetadata, torch.Tensor]:
    """A follower's (input_ids, positions, metadata, LM-head rows) from rank 0's payload."""
    t, b = plan.num_tokens, plan.num_seqs
    ids, pos, slots, starts, lens, tables, rows = payload.split(
        [t, t, t, b + 1, b, b * plan.table_width, plan.num_rows])
    meta = AttentionMetadata(
        slot_mapping=slots,
        query_start_loc=starts.to(torch.int32),
        seq_lens=lens.to(torch.int32),
        block_tables=tables.view(b, plan.table_width).to(torch.int32),
        max_query_len=plan.max_query_len,
        max_seq_len=plan.max_seq_len,
    )
    return ids, pos, meta, rows


def make_runner(model: DecoderLM, backend: AttentionBackend, num_blocks: int,
                block_size: int, device: torch.device, dtype: torch.dtype,
                tables: BlockTables) -> ModelRunner:
    group = distributed.group()
    cls = TPLeaderRunner if group.size > 1 and group.rank == 0 else ModelRunner
    return cls(model, backend, num_blocks, block_size, device, dtype, tables)
