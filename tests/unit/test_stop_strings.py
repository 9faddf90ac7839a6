"""Stop strings are found across token boundaries and never emitted."""

from __future__ import annotations

from inference.engine.stop_strings import StopStringFilter


def _stream(pieces: list[str], stops: list[str]) -> tuple[str, bool]:
    f = StopStringFilter(stops)
    out = "".join(f.feed(p) for p in pieces[:-1]) + f.feed(pieces[-1], final=True)
    return out, f.stopped


def test_stop_split_across_pieces_is_cut_and_not_emitted():
    assert _stream(["Hello wor", "ld<", "|en", "d|> after"], ["<|end|>"]) == ("Hello world", True)


def test_text_that_only_looks_like_a_stop_prefix_is_released():
    assert _stream(["a <|e", "xtra"], ["<|end|>"]) == ("a <|extra", False)


def test_earliest_of_several_stops_wins():
    assert _stream(["one. two! three"], ["!", "."]) == ("one", True)


def test_held_tail_is_flushed_at_the_end():
    f = StopStringFilter(["STOP"])
    assert f.feed("go ST") == "go "
    assert f.feed("", final=True) == "ST"


def test_no_stops_passes_everything():
    assert _stream(["a", "b"], []) == ("ab", False)


def test_keep_shows_the_stop_string_and_drops_what_follows() -> None:
    f = StopStringFilter(["STOP", "ST"], keep=True)
    assert f.feed("abc S") == "abc "  # "S" could grow into either
    assert f.feed("TOP and more") == "ST" and f.stopped  # "ST" starts there and is shorter
    g = StopStringFilter(["\n\n"], keep=True)
    assert g.feed("one\n") == "one" and g.feed("\ntwo") == "\n\n" and g.stopped
