"""Coalesced delivery: the chunks a slow client let pile up become one delta per choice,
and nothing about the answer changes (text, token ids, logprobs, finish reason, usage)."""

from __future__ import annotations

from kvmesh.coalesce import RUN_CHARS, RUN_TOKENS, coalesce, compact
from kvmesh.wire import Chunk, Logprob, PromptEcho, UsageInfo


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


def _per_choice(chunks: list[Chunk]) -> dict[int, tuple[str, list[int], list[int], str | None]]:
    out: dict[int, tuple[str, list[int], list[int], str | None]] = {}
    for c in chunks:
        text, ids, lps, finish = out.get(c.index, ("", [], [], None))
        out[c.index] = (text + c.text, ids + c.token_ids,
                        lps + [lp.token_id for lp in c.logprobs or []], c.finish_reason or finish)
    return out


def test_a_stored_answer_is_compacted_into_bounded_runs_that_read_the_same() -> None:
    """Two choices of 100 one-token chunks with logprobs, after an echoed prompt: the prompt's
    chunk stays alone, the rest become runs of at most RUN_TOKENS tokens, and per choice the
    text, tokens, logprobs and finish reason are unchanged, with the usage still there."""
    chunks = [Chunk("r", 0, 0, "", [], prompt=PromptEcho("Say", []))]
    for step in range(100):
        for choice in (0, 1):
            chunks.append(Chunk("r", len(chunks), choice, f" w{step}", [step], _lp(step)))
    chunks[-2].finish_reason = "length"
    chunks[-1].finish_reason, chunks[-1].usage = "stop", UsageInfo(3, 200)
    stored = compact(chunks)
    assert stored[0].prompt is not None and not stored[0].token_ids
    assert len(stored) == 1 + 2 * 200 // RUN_TOKENS + 2  # 4 runs (64+64+64+8), 2 choices each
    assert all(len(c.token_ids) <= RUN_TOKENS for c in stored)
    assert _per_choice(stored) == _per_choice(chunks)
    assert [c.usage for c in stored if c.usage] == [UsageInfo(3, 200)]


def test_a_chunk_over_the_run_bounds_is_a_run_of_its_own() -> None:
    big = "b" * (RUN_CHARS + 1)
    chunks = [Chunk("r", 0, 0, "a", [1]), Chunk("r", 1, 0, big, [2]), Chunk("r", 2, 0, "c", [3])]
    assert [c.text for c in compact(chunks)] == ["a", big, "c"]
    assert compact([]) == []
