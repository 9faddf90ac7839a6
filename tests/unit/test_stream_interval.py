"""A worker's stream interval (inference/stream_interval.py): which chunks wait, which go, and
that what goes reads back as the same answer."""

from __future__ import annotations

from inference.stream_interval import Held
from kvmesh.wire import Chunk, PromptEcho


def _tok(i: int, index: int = 0, finish: str | None = None) -> Chunk:
    return Chunk("r", 0, index, f"t{i} ", [i], None, finish)


def _sent(held: Held, chunks: list[Chunk], interval: int, ends_at: int = -1) -> list[list[Chunk]]:
    """What `take` released after each chunk in turn (the last one ends the request)."""
    last = len(chunks) - 1 if ends_at < 0 else ends_at
    return [held.take(c, interval, i == last) for i, c in enumerate(chunks)]


def test_the_first_token_goes_at_once_then_every_interval_tokens_and_the_rest_at_the_end() -> None:
    chunks = [_tok(i) for i in range(10)]
    chunks[-1].finish_reason = "length"
    sent = _sent(Held(), chunks, 4)
    assert [[c.token_ids for c in s] for s in sent] == [
        [[0]], [], [], [], [[1, 2, 3, 4]], [], [], [], [[5, 6, 7, 8]], [[9]]]
    joined = [c for s in sent for c in s]
    assert "".join(c.text for c in joined) == "".join(f"t{i} " for i in range(10))
    assert joined[-1].finish_reason == "length"


def test_a_chunk_of_several_tokens_counts_them_all() -> None:
    held = Held()
    assert held.take(Chunk("r", 0, 0, "a", [1], None), 3, False)  # the first token
    assert held.take(Chunk("r", 0, 0, "bc", [2, 3], None), 3, False) == []
    out = held.take(Chunk("r", 0, 0, "d", [4], None), 3, False)
    assert [(c.text, c.token_ids) for c in out] == [("bcd", [2, 3, 4])]


def test_an_echoed_prompt_goes_alone_and_the_first_token_still_goes_at_once() -> None:
    held = Held()
    echo = Chunk("r", 0, 0, "", [], None, prompt=PromptEcho("the prompt", []))
    assert held.take(echo, 8, False) == [echo]
    first = _tok(1)
    assert held.take(first, 8, False) == [first]
    assert held.take(_tok(2), 8, False) == []


def test_a_choice_that_finishes_sends_what_is_held_and_the_ending_choice_goes_last() -> None:
    held = Held()
    assert len(held.take(_tok(0, 0), 8, False)) == 1
    assert held.take(_tok(1, 0), 8, False) == []
    assert held.take(_tok(2, 1), 8, False) == []
    out = held.take(_tok(3, 1, "stop"), 8, False)  # choice 1 finishes: all of it goes
    assert [(c.index, c.token_ids, c.finish_reason) for c in out] == [
        (0, [1], None), (1, [2, 3], "stop")]
    assert held.take(_tok(4, 0), 8, False) == []
    assert held.take(_tok(5, 1), 8, False) == []  # (a late chunk of choice 1: none in practice)
    out = held.take(_tok(6, 0, "length"), 8, True)  # choice 0 ends the request: it goes last
    assert [(c.index, c.token_ids) for c in out] == [(1, [5]), (0, [4, 6])]


def test_a_first_token_without_text_does_not_end_the_wait_for_the_first_text() -> None:
    held = Held()
    half = Chunk("r", 0, 0, "", [1], None)  # half a character: no text yet
    assert held.take(half, 8, False) == [half]
    rest = Chunk("r", 0, 0, "é", [2], None)
    assert held.take(rest, 8, False) == [rest]  # the first text goes at once
    assert held.take(_tok(3), 8, False) == []


def test_interval_one_sends_every_chunk_as_it_comes() -> None:
    chunks = [_tok(i) for i in range(5)]
    assert [len(s) for s in _sent(Held(), chunks, 1)] == [1] * 5
