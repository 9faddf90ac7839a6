"""Every sequence's block table, mirrored in place as a row of one int32 array.

Why: a step's attention reads each sequence's block table as one padded `[seqs, widest]`
array. Built afresh from the sequences' lists it cost a pass over every block of every
sequence each step (at 256 decodes of ~20 blocks, the largest part of preparing a step's
inputs); kept in place, a step's tables are one gather of rows (the runner gathers past a
few sequences, runner.py), and the host work per step follows what changed (vLLM's
`BlockTable` in its persistent batch).

Contract: `KVCacheManager` is the only writer: it calls `write(seq, start)` after changing
`seq.block_table` from `start` on (a sequence that has no row yet gets one) and `release(seq)`
when it frees the sequence's blocks. Invariant (`check`, from `KVCacheManager.
check_invariants`): a sequence with a row (`seq.table_row >= 0`) holds its `block_table` at the
start of that row and zeros after it; a free row is all zeros, since padding entries point at
block 0 (attention.py). Rows and width grow as needed, by doubling.
"""

from __future__ import annotations

import numpy as np

from .sequence import Sequence


class BlockTables:
    def __init__(self, rows: int = 64, width: int = 16) -> None:
        self._array = np.zeros((rows, width), dtype=np.int32)
        self._free = list(range(rows - 1, -1, -1))  # popped from the end: low rows first
        self._lens = np.zeros(rows, dtype=np.int64)  # the entries each row holds
        self._owners: dict[int, Sequence] = {}  # row -> its sequence, for `check`

    def write(self, seq: Sequence, start: int) -> None:
        """Copy `seq.block_table[start:]` into its row (giving it one if it has none). A table
        only grows or changes in place until `release`, so nothing past it needs zeroing."""
        row = seq.table_row
        if row < 0:
            row = seq.table_row = self._take_row(seq)
            start = 0
        table = seq.block_table
        n = len(table)
        if n > self._array.shape[1]:
            self._widen(n)
        if n - start == 1:  # hot path: a decode's new block
            self._array[row, start] = table[start]
        elif n > start:
            self._array[row, start:n] = table[start:]
        self._lens[row] = n

    def release(self, seq: Sequence) -> None:
        """Zero `seq`'s row and free it."""
        row = seq.table_row
        if row < 0:
            return
        self._array[row, : self._lens[row]] = 0
        self._lens[row] = 0
        del self._owners[row]
        self._free.append(row)
        seq.table_row = -1

    def gather(self, seqs: list[Sequence]) -> np.ndarray:
        """The tables of `seqs` (each holding a row), as one `[len(seqs), widest]` int32
        array, zero-padded."""
        rows = np.array([s.table_row for s in seqs])
        assert rows.min() >= 0, "a sequence without blocks in a step"  # -1 would read a row
        return self._array[rows, : int(self._lens[rows].max())]

    def check(self) -> None:
        """Raise AssertionError if a row differs from its sequence's table (module doc)."""
        for row in range(self._array.shape[0]):
            seq = self._owners.get(row)
            table = [] if seq is None else seq.block_table
            assert seq is None or seq.table_row == row, f"row {row}: owner moved"
            assert self._lens[row] == len(table), f"row {row}: length"
            assert self._array[row, : len(table)].tolist() == table, f"row {row}: blocks"
            assert not self._array[row, len(table) :].any(), f"row {row}: not zero-padded"

    def _take_row(self, seq: Sequence) -> int:
        if not self._free:
            rows = self._array.shape[0]
            self._array = np.concatenate([self._array, np.zeros_like(self._array)])
            self._free = list(range(2 * rows - 1, rows - 1, -1))
            self._lens = np.concatenate([self._lens, np.zeros_like(self._lens)])
        row = self._free.pop()
        self._owners[row] = seq
        return row

    def _widen(self, need: int) -> None:
        width = self._array.shape[1]
        while width < need:
            width *= 2
        wider = np.zeros((self._array.shape[0], width), dtype=np.int32)
        wider[:, : self._array.shape[1]] = self._array
        self._array = wider
