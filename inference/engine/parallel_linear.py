"""Megatron-style tensor-parallel layers: each rank holds a slice of a weight, and the layer
says which slice, so a loader reads only that (`tp_slice`) and the layer copies it in (`load`).

- `ColumnParallelLinear`: a slice of the output rows of one or more stacked matrices (fused
  QKV, fused gate-up); y stays split across ranks, no communication.
- `RowParallelLinear`: a slice of the input columns; each rank's partial product is summed over
  the ranks (one all-reduce), so y is whole again on every rank.
- `VocabParallelEmbedding` / `ParallelLMHead`: a slice of the vocabulary rows (padded to a
  multiple of the TP size); the embedding all-reduces, the head gathers the logits on rank 0.

Each is an `nn.Linear`/`nn.Embedding` with the local shape, so parameter names, `F.linear` and
the TP=1 model are exactly as before: at TP=1 every slice is the whole tensor and no collective
runs. A layer takes the process's group when it is built (`self.tp`), so a TP=1 model in a
process that is also rank 0 of a group (tests compare the two) stays TP=1.
`Slice = (dim, start, stop)` of the full Hugging Face tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed as tp
from .loader import Slice


@dataclass(frozen=True)
class Part:
    """One stacked matrix of a column-parallel layer: `name` ("q", "gate", ...; "" alone),
    its full row count, and the rows [start, start + local) of it this rank holds."""

    name: str
    full: int
    local: int
    start: int


def split_part(name: str, full: int) -> Part:
    """An even split of `full` rows over the ranks (the caller checked divisibility)."""
    local = full // tp.tp_size()
    return Part(name, full, local, tp.tp_rank() * local)


def head_part(name: str, heads: int, head_dim: int) -> Part:
    """Attention heads over the ranks; with fewer heads than ranks, `size / heads` ranks share
    (replicate) each head, as vLLM does for KV heads."""
    size, rank = tp.tp_size(), tp.tp_rank()
    if heads >= size:
        local, first = heads // size, rank * (heads // size)
    else:
        local, first = 1, rank * heads // size
    return Part(name, heads * head_dim, local * head_dim, first * head_dim)


def _copy(param: torch.Tensor, tensor: torch.Tensor, part: Slice, what: str) -> None:
    """Copy `tensor` (the full HF tensor, or already only `part` of it) into `param`."""
    dim, start, stop = part
    if tensor.shape[dim] != stop - start:
        tensor = tensor.narrow(dim, start, stop - start)
    if tuple(tensor.shape) != tuple(param.shape):
        raise ValueError(f"{what}: shape {tuple(tensor.shape)}, want {tuple(param.shape)}")
    param.copy_(tensor)


class ColumnParallelLinear(nn.Linear):
    def __init__(self, in_features: int, parts: list[Part], bias: bool):
        super().__init__(in_features, sum(p.local for p in parts), bias=bias)
        self.parts: dict[str, tuple[int, Part]] = {}
        offset = 0
        for p in parts:
            self.parts[p.name] = (offset, p)
            offset += p.local

    def tp_slice(self, shard: str | None) -> Slice:
        _, p = self.parts[shard or ""]
        return (0, p.start, p.start + p.local)

    def load(self, param: torch.Tensor, shard: str | None, tensor: torch.Tensor) -> None:
        offset, p = self.parts[shard or ""]
        _copy(param[offset : offset + p.local], tensor, self.tp_slice(shard), shard or "weight")

    def full_shape(self, param: torch.Tensor) -> tuple[int, ...]:
        """`param`'s shape at TP=1 (the stacked matrices whole)."""
        return (sum(p.full for _, p in self.parts.values()), *param.shape[1:])

    def load_full(self, param: torch.Tensor, tensor: torch.Tensor) -> None:
        """Copy this rank's rows of a `full_shape` tensor (the stacked matrices whole) in."""
        for name, chunk in zip(self.parts, tensor.split([p.full for _, p in self.parts.values()]),
                               strict=True):
            self.load(param, name, chunk)


class RowParallelLinear(nn.Linear):
    def __init__(self, in_features: int, out_features: int):
        self.in_full, self.tp = in_features, tp.group()
        super().__init__(in_features // self.tp.size, out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduce(F.linear(x, self.weight))

    def reduce(self, y: torch.Tensor) -> torch.Tensor:
        """This rank's partial product `y` summed over the ranks (as is at TP=1)."""
        return tp.all_reduce(y) if self.tp.size > 1 else y

    def tp_slice(self, shard: str | None) -> Slice:
        start = self.tp.rank * self.in_features
        return (1, start, start + self.in_features)

    def load(self, param: torch.Tensor, shard: str | None, tensor: torch.Tensor) -> None:
        _copy(param, tensor, self.tp_slice(shard), "weight")

    def full_shape(self, param: torch.Tensor) -> tuple[int, ...]:
        return (self.out_features, self.in_full)

    def load_full(self, param: torch.Tensor, tensor: torch.Tensor) -> None:
        self.load(param, None, tensor)


class _VocabSlice:
    """Rows [start, start + rows) of a vocabulary padded to `rows * tp_size`; the rows past
    `vocab` are padding, zero in the weight."""

    def _init_vocab(self, vocab: int) -> int:
        self.vocab, self.tp = vocab, tp.group()
        self.rows = -(-vocab // self.tp.size)
        self.start = self.tp.rank * self.rows
        return self.rows

    def tp_slice(self, shard: str | None) -> Slice:
        return (0, min(self.start, self.vocab), min(self.start + self.rows, self.vocab))

    def load(self, param: torch.Tensor, shard: str | None, tensor: torch.Tensor) -> None:
        dim, start, stop = self.tp_slice(shard)
        param[stop - start :].zero_()
        _copy(param[: stop - start], tensor, (dim, start, stop), "vocabulary rows")

    def full_shape(self, param: torch.Tensor) -> tuple[int, ...]:
        return (self.vocab, *param.shape[1:])

    def load_full(self, param: torch.Tensor, tensor: torch.Tensor) -> None:
        self.load(param, None, tensor)


class VocabParallelEmbedding(_VocabSlice, nn.Embedding):
    def __init__(self, vocab: int, hidden: int):
        nn.Embedding.__init__(self, self._init_vocab(vocab), hidden)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.tp.size == 1:
            return F.embedding(ids, self.weight)
        mine = (ids >= self.start) & (ids < self.start + self.rows)
        out = F.embedding((ids - self.start) * mine, self.weight) * mine.unsqueeze(-1)
        return tp.all_reduce(out)


class ParallelLMHead(_VocabSlice, nn.Linear):
    def __init__(self, hidden: int, vocab: int):
        nn.Linear.__init__(self, hidden, self._init_vocab(vocab), bias=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor | None:
        """Float32 logits `[rows, vocab]` on rank 0; None on the other ranks."""
        logits = F.linear(hidden, self.weight)
        if self.tp.size == 1:
            return logits.float()
        logits = tp.gather_last_dim(logits)  # in the model's dtype: half the bytes of float32
        return None if logits is None else logits[:, : self.vocab].float()


def check_divisible(heads: int, kv_heads: int, intermediate: int, size: int) -> None:
    """ValueError naming tensor_parallel_size when the model cannot be split `size` ways."""
    why = []
    if heads % size:
        why.append(f"{heads} attention heads")
    if kv_heads % size and size % kv_heads:
        why.append(f"{kv_heads} KV heads (neither divides the other)")
    if intermediate % size:
        why.append(f"an intermediate size of {intermediate}")
    if why:
        raise ValueError(
            f"tensor_parallel_size: {size} does not divide the model's {', '.join(why)}; "
            "pick a size that does"
        )
