"""The runner's per-step inputs: one host buffer, every part on a 16-byte boundary, for
prompt chunks (positions and slots per sequence in numpy) and for decode rows (lists for a
few, numpy over the block tables kept in place for more), block tables of different widths
zero-padded."""

from __future__ import annotations

import pytest

from inference.engine.inflight import InFlight
from inference.engine.sampling_params import SamplingParams

from .engine_driver import tiny_engine


@pytest.mark.parametrize("lengths", [[3], [5, 2], [4, 7, 1], [6, 6], [3, 9] * 10])
def test_each_input_starts_on_a_16_byte_boundary_and_holds_its_values(lengths):
    eng = tiny_engine(max_num_seqs=64)
    for i, n in enumerate(lengths):
        eng.add_request(f"r{i}", list(range(10 + i, 10 + i + n)), SamplingParams(max_tokens=2))
    batch = eng.scheduler.schedule()
    ids, pos, meta, rows, placeholder = eng.runner.prepare(batch, list(range(len(lengths))))
    views = {"ids": ids, "positions": pos, "slots": meta.slot_mapping, "rows": rows}
    for name, t in views.items():
        assert t.storage_offset() * t.element_size() % 16 == 0, name
    assert ids.tolist() == [t for s in batch.seqs for t in s.token_ids]
    assert pos.tolist() == [p for n in lengths for p in range(n)]
    bs = eng.config.block_size
    assert meta.slot_mapping.tolist() == [s.block_table[p // bs] * bs + p % bs
                                          for s, n in zip(batch.seqs, lengths, strict=True)
                                          for p in range(n)]
    ends = [sum(lengths[: i + 1]) for i in range(len(lengths))]
    assert meta.query_start_loc.tolist() == [0, *ends]
    assert meta.seq_lens.tolist() == lengths
    assert rows.tolist() == [e - 1 for e in ends]
    assert [r[: len(s.block_table)] for r, s in zip(meta.block_tables.tolist(), batch.seqs,
                                                    strict=True)] == [s.block_table
                                                                      for s in batch.seqs]
    assert placeholder is None
    assert meta.num_decodes == 0


def test_a_step_counts_its_leading_decodes():
    """Decodes come first in a step that also computes a prompt; the runner says how many
    (cuda_graphs.py replays them through a decode graph)."""
    eng = tiny_engine()
    for i in range(3):
        eng.add_request(f"r{i}", list(range(10 + i, 16 + i)), SamplingParams(max_tokens=4))
    eng.step()  # the prompts; every sequence now has one token to decode
    eng.add_request("late", list(range(40, 45)), SamplingParams(max_tokens=4))
    batch = eng.scheduler.schedule()
    assert batch.num_tokens == [1, 1, 1, 5]
    assert batch.leading_decodes() == 3
    meta = eng.runner.prepare(batch, [0, 1, 2, 3])[2]
    assert meta.num_decodes == 3 and not meta.is_decode


@pytest.mark.parametrize("rows", [1, 3, 4, 17, 40])
def test_decode_rows_start_on_16_byte_boundaries_and_hold_their_values(rows):
    # past 16 rows: the tables kept in place, slots in numpy
    eng = tiny_engine(max_num_seqs=64, num_kv_blocks=1024)
    for i in range(rows):
        eng.add_request(f"r{i}", list(range(10 + i, 15 + i + 9 * (i % 5))),
                        SamplingParams(max_tokens=20))
    while eng.scheduler.waiting or any(s.num_new_tokens > 1 for s in eng.scheduler.running):
        eng.step()  # the prompts; then every sequence has one token to decode
    batch = eng.scheduler.schedule()
    assert batch.num_tokens == [1] * rows
    ids, pos, meta, out_rows, _ = eng.runner.prepare(batch, list(range(rows)))
    for name, t in {"ids": ids, "positions": pos, "slots": meta.slot_mapping,
                    "rows": out_rows}.items():
        assert t.storage_offset() * t.element_size() % 16 == 0, name
    at = [s.num_computed_tokens for s in batch.seqs]
    assert ids.tolist() == [s.token_ids[p] for s, p in zip(batch.seqs, at, strict=True)]
    assert pos.tolist() == at
    bs = eng.config.block_size
    assert meta.slot_mapping.tolist() == [s.block_table[p // bs] * bs + p % bs
                                          for s, p in zip(batch.seqs, at, strict=True)]
    assert meta.query_start_loc.tolist() == list(range(rows + 1))
    assert meta.seq_lens.tolist() == [p + 1 for p in at]
    assert out_rows.tolist() == list(range(rows))
    assert meta.num_decodes == rows
    assert meta.block_tables.tolist() == [
        s.block_table + [0] * (max(len(t.block_table) for t in batch.seqs) - len(s.block_table))
        for s in batch.seqs]


def test_placeholders_are_found_at_each_sequences_last_input_and_filled_from_the_step_in_flight(
        monkeypatch):
    """With the overlapped loop and tokens still in flight, the decodes' inputs are
    placeholders; a prompt beside them has none. `fill` writes the in-flight tokens over
    exactly those inputs."""
    monkeypatch.setattr(InFlight, "ready", lambda self: False)
    eng = tiny_engine(async_scheduling=True)
    for i in range(3):
        eng.add_request(f"r{i}", list(range(10 + i, 16 + i)), SamplingParams(max_tokens=4))
    eng.step()  # the prompts; their first tokens are in flight
    eng.add_request("late", list(range(40, 45)), SamplingParams(max_tokens=4))
    batch = eng.scheduler.schedule()
    assert batch.num_tokens == [1, 1, 1, 5]
    in_flight = eng._inflight
    ids, _, _, _, holes = eng.runner.prepare(batch, [0, 1, 2, 3])
    assert holes is not None
    expected_rows = [-s.token_ids[-1] - 1 for s in batch.seqs[:3]]
    assert holes.at.tolist() == [0, 1, 2] and holes.rows.tolist() == expected_rows
    before = ids.tolist()
    holes.fill(ids, in_flight.tokens)
    tokens = in_flight.tokens.tolist()
    assert ids.tolist() == [tokens[r] for r in expected_rows] + before[3:]
    assert before[3:] == list(range(40, 45))
