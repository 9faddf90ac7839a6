"""Coalesced delivery: the chunks a slow client let pile up become one delta per choice,
and nothing about the answer changes (text, token ids, logprobs, finish reason, usage)."""

from __future__ import annotations

from gateway.coalesce import coalesce
from kvmesh.wire import Chunk, Logprob, UsageInfo


def _lp(token_id: int) -> list[Logprob]:
    return [Logprob(token_id, f"t{token_id}", -0.1 * token_id)]


def test_pending_chunks_become_one_delta_per_choice_in_order() -> None:
    chunks = [Chunk("r", 0, 0, "He", [1], _lp(1)), Chunk("r", 1, 1, "Yo", [7], _lp(7)),
              Chunk("r", 2, 0, "llo", [2], _lp(2)), Chunk("r", 3, 1, "!", [8], _lp(8),
                                                           finish_reason="stop"),
              Chunk("r", 4, 0, ".", [3], _lp(3), finish_reason="length",
                    usage=UsageInfo(5, 5))]
    merged = coalesce(chunks)
    assert [c.index for c in merged] == [0, 1]
    zero, one = merged
    assert (zero.text, zero.token_ids, zero.seq) == ("Hello.", [1, 2, 3], 4)
    assert [lp.token_id for lp in zero.logprobs or []] == [1, 2, 3]
    assert (zero.finish_reason, zero.usage) == ("length", UsageInfo(5, 5))
    assert (one.text, one.token_ids, one.finish_reason, one.usage) == ("Yo!", [7, 8], "stop",
                                                                       None)


def test_a_lone_chunk_goes_out_as_it_is_and_inputs_are_not_changed() -> None:
    lone = [Chunk("r", 0, 0, "a", [1])]
    assert coalesce(lone) is lone
    chunks = [Chunk("r", 0, 0, "a", [1]), Chunk("r", 1, 0, "b", [2])]
    coalesce(chunks)
    assert chunks[0].text == "a" and chunks[0].token_ids == [1]


def test_chunks_without_logprobs_stay_without() -> None:
    (merged,) = coalesce([Chunk("r", 0, 0, "a", [1]), Chunk("r", 1, 0, "b", [2])])
    assert merged.logprobs is None
