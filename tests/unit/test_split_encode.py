"""A text encoded segment by segment, through the memo or not, gives exactly the ids of
encoding it whole (inference/engine/split_encode.py), and tokenizers where that is not proven
are not cut."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import tokenizers
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken, normalizers, pre_tokenizers

from inference.engine import split_encode
from inference.engine.split_encode import SegmentEncoder, segments, splittable
from inference.engine.tokenizer import Tokenizer, _byte_level_pre_tokenizer

# Hostile material: every kind of character the split regexes treat differently, placed next
# to the spaces where cuts may fall.
ATOMS = ["word", "Word", "it's", "we'll", "I'M", " ", "  ", "   x", "\t", "\n", "\r\n", " \n ",
         "12345", "3.14", "1,000", "x1", "naïve", "Straße", "中文", "日本語", "😀", "👨‍👩‍👧",
         "<|im_start|>", "<|im_end|>", "!!", "?!", "(", ")", ":", "-", "'", "\"", "\u00a0",
         "\u200b", "def f(x):", "    return", " a", " b", " Zed", ".", ",", " 7", "'s", "'LL",
         " 's", "$5", "#1", "…", "\u3000", "\x1c", "_", "١٢٣", "½"]


def _texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        parts = [rng.choice(ATOMS) for _ in range(rng.randint(20, 400))]
        out.append("".join(p if rng.random() < 0.5 else p + " " for p in parts))
    return out


@pytest.fixture(scope="module")
def gguf_tok(smollm_gguf: Path) -> tokenizers.Tokenizer:
    from inference.engine.gguf_loader import read_metadata

    return Tokenizer.from_gguf_metadata(read_metadata(smollm_gguf))._tok


@pytest.fixture(scope="module", params=["smollm", "gpt2", "llama3", "qwen2"])
def tok(request: pytest.FixtureRequest, gguf_tok: tokenizers.Tokenizer) -> tokenizers.Tokenizer:
    """The default model's vocabulary under each pre-tokenizer we build (their split rules
    are what the proof is about)."""
    t = tokenizers.Tokenizer.from_str(gguf_tok.to_str())
    t.pre_tokenizer = _byte_level_pre_tokenizer(request.param)
    return t


def test_the_pre_tokenizers_we_build_are_splittable(tok: tokenizers.Tokenizer) -> None:
    assert splittable(tok)


def _whole(tok: tokenizers.Tokenizer, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False).ids


@pytest.mark.parametrize("seed", [2, 3])
def test_segments_encode_to_the_whole_texts_ids(tok: tokenizers.Tokenizer, seed: int) -> None:
    """Every text twice: the first pass fills the memo, the second reads it."""
    enc = SegmentEncoder(tok)
    texts = _texts(60, seed=seed)
    for text in texts + texts:
        assert len(segments(text)) > 1 or len(text) < 200
        assert enc.encode(text) == _whole(tok, text)
    assert len(enc._memo) > 100  # so the second pass read much of it


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(ATOMS) | st.text(max_size=6), min_size=1, max_size=80))
def test_segments_encode_like_the_whole_on_generated_text(gguf_tok: tokenizers.Tokenizer,
                                                          parts: list[str]) -> None:
    text = " ".join(parts)
    assert "".join(segments(text)) == text
    enc = SegmentEncoder(gguf_tok)
    assert enc.encode(text) == _whole(gguf_tok, text)
    assert enc.encode(text) == _whole(gguf_tok, text)  # from the memo


def test_cuts_fall_before_every_space_between_two_non_spaces() -> None:
    text = "alpha  beta\tgamma, delta 42 (epsilon) zeta's 's"
    assert segments(text) == ["alpha  beta\tgamma,", " delta", " 42", " (epsilon)", " zeta's",
                              " 's"]
    assert segments("a  b") == ["a  b"]  # a run of spaces: no cut
    assert segments(" lead") == [" lead"]  # no character before the space: no cut
    assert segments("x\u00a0 y") == ["x\u00a0 y"]  # after whitespace (a no-break space)
    assert segments("no_spaces_here_at_all" * 50) == ["no_spaces_here_at_all" * 50]


# Unicode's White_Space: what the split regexes' `\s` matches.
WHITE_SPACE = [*range(0x9, 0xE), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028,
               0x2029, 0x202F, 0x205F, 0x3000]


def test_no_cut_follows_any_character_the_split_regexes_call_whitespace() -> None:
    for code in WHITE_SPACE:
        text = f"a{chr(code)} b"
        assert segments(text) == [text], hex(code)


def test_a_text_of_known_segments_asks_the_tokenizer_nothing(
        gguf_tok: tokenizers.Tokenizer) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the tokenizer was asked")

    enc = SegmentEncoder(gguf_tok)
    for word in ["Once", " upon", " a", " time,"] * 2:  # each alone, twice: learnt
        enc.encode(word)
    enc._tok = SimpleNamespace(encode=refuse)  # type: ignore[assignment]
    enc._batch = refuse
    text = "Once upon a time, a time, upon a time,"
    assert enc.encode(text) == _whole(gguf_tok, text)


def test_the_memo_keeps_short_segments_and_stays_bounded(
        gguf_tok: tokenizers.Tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(split_encode, "MEMO_ENTRIES", 8)
    enc = SegmentEncoder(gguf_tok)
    long_word = "x" * (split_encode.MEMO_SEGMENT_CHARS + 1)
    text = f"one two {long_word} three"
    assert enc.encode(text) == _whole(gguf_tok, text)
    assert not enc._memo  # missed once: not learnt yet
    assert enc.encode(text) == _whole(gguf_tok, text)
    assert set(enc._memo) == {"one", " two", " three"}  # the long segment is not kept
    text = "one two zebra three"  # one new word among known ones: encoded alone, and kept
    assert enc.encode(text) == _whole(gguf_tok, text)
    assert " zebra" in enc._memo
    for text in _texts(20, seed=7):
        for _ in range(2):
            assert enc.encode(text) == _whole(gguf_tok, text)
        assert len(enc._memo) <= 8 and len(enc._seen) <= 8


def test_unproven_tokenizers_are_not_cut(gguf_tok: tokenizers.Tokenizer) -> None:
    def variant() -> tokenizers.Tokenizer:
        return tokenizers.Tokenizer.from_str(gguf_tok.to_str())

    with_normalizer = variant()
    with_normalizer.normalizer = normalizers.NFKC()
    metaspace = variant()  # SentencePiece style: each piece would get its own prefix mark
    metaspace.pre_tokenizer = pre_tokenizers.Metaspace()
    prefix_space = variant()
    prefix_space.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    spaced_token = variant()
    spaced_token.add_special_tokens([AddedToken("<start of turn>", special=True)])
    digits_only = variant()
    digits_only.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits()])
    for t in (with_normalizer, metaspace, prefix_space, spaced_token, digits_only):
        assert not splittable(t)
    for flag in ("lstrip", "rstrip", "single_word"):  # each takes in or reads a cut's space
        stripping = variant()
        stripping.add_special_tokens([AddedToken("<mask>", special=True, **{flag: True})])
        assert not splittable(stripping), flag


def test_a_token_that_strips_the_space_after_it_would_change_the_ids(
        gguf_tok: tokenizers.Tokenizer) -> None:
    """Why `splittable` refuses it: `<mask>` takes in the space before `world` whole, and
    not when the text is cut there."""
    t = tokenizers.Tokenizer.from_str(gguf_tok.to_str())
    t.add_special_tokens([AddedToken("<mask>", special=True, rstrip=True)])
    text = "hello <mask> world"
    assert segments(text) == ["hello", " <mask>", " world"]
    cut = [i for part in segments(text) for i in _whole(t, part)]
    assert cut != _whole(t, text)
