"""Streaming detokenisation: pieces join to the full decode and never split a character."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from inference.engine.detokenizer import IncrementalDetokenizer
from inference.engine.tokenizer import Tokenizer

MULTIBYTE_TEXTS = [
    "中文字符测试，然后是日本語のテキストと한국어.",
    "emoji 😀👍🏽 🇫🇷 👨‍👩‍👧 and more 🤖🧠",
    "mixed naïve café — “quotes” … ∑∫√ 12345",
    "<|im_start|>assistant\n你好<|im_end|>",
]


@pytest.fixture(scope="module")
def byte_level(smollm_gguf: Path) -> Tokenizer:
    from inference.engine.gguf_loader import read_metadata

    tok = Tokenizer.from_gguf_metadata(read_metadata(smollm_gguf))
    assert tok.decodes_bytewise  # SmolLM2's decoder is byte-level
    return tok


class Windowed(Tokenizer):
    """The same tokenizer, decoded the way any decoder needs: with left context."""

    def __init__(self, tok: Tokenizer) -> None:
        self.__dict__.update(tok.__dict__)
        self.decodes_bytewise = False


@pytest.fixture(scope="module", params=["bytewise", "windowed"])
def tok(request: pytest.FixtureRequest, byte_level: Tokenizer) -> Tokenizer:
    """Every test runs both ways of decoding: without and with left context."""
    return byte_level if request.param == "bytewise" else Windowed(byte_level)


def _stream(tok: Tokenizer, ids: list[int], chunks: list[int], skip: bool = True) -> list[str]:
    """The pieces of `ids` pushed in `chunks` (a chunk of one token through `push_one`, as the
    engine pushes each sampled token), the rest, then the flush."""
    detok = IncrementalDetokenizer(tok, skip_special_tokens=skip)
    pieces, start = [], 0
    for size in chunks:
        pieces.append(detok.push_one(ids[start]) if size == 1 and start < len(ids)
                      else detok.push(ids[start : start + size]))
        start += size
    pieces.append(detok.push(ids[start:]))
    pieces.append(detok.flush())
    return pieces


@pytest.mark.parametrize("text", MULTIBYTE_TEXTS)
@pytest.mark.parametrize("skip", [True, False])
def test_token_by_token_pieces_join_to_full_decode(tok: Tokenizer, text: str, skip: bool) -> None:
    ids = tok.encode(text)
    pieces = _stream(tok, ids, [1] * len(ids), skip)
    assert "".join(pieces) == tok.decode(ids, skip_special_tokens=skip)


@pytest.mark.parametrize("text", MULTIBYTE_TEXTS)
def test_no_piece_holds_half_a_character(tok: Tokenizer, text: str) -> None:
    ids = tok.encode(text)
    # The premise: some character's bytes really are split across tokens here.
    assert any(tok.decode(ids[:i]).endswith("\ufffd") for i in range(1, len(ids)))
    for piece in _stream(tok, ids, [1] * len(ids)):
        assert "\ufffd" not in piece


def test_random_token_sequences_join_exactly(tok: Tokenizer) -> None:
    rng = random.Random(1234)
    for _ in range(200):
        ids = [rng.randrange(tok.vocab_size) for _ in range(rng.randrange(1, 60))]
        chunks = [rng.randrange(0, 4) for _ in range(rng.randrange(0, 30))]
        for skip in (True, False):
            pieces = _stream(tok, ids, chunks, skip)
            assert "".join(pieces) == tok.decode(ids, skip_special_tokens=skip), ids


def test_byte_tokens_emit_a_character_only_when_complete(tok: Tokenizer) -> None:
    # "中" is E4 B8 AD; in byte-level BPE each byte has its own token.
    byte_ids = [tok.token_to_id(ch) for ch in ("ä", "¸", "Ń")]
    assert None not in byte_ids and tok.decode(byte_ids) == "中"
    for push in ("push", "push_one"):
        detok = IncrementalDetokenizer(tok)
        one = getattr(detok, push)
        assert [one([i] if push == "push" else i) for i in byte_ids] == ["", "", "中"]
        assert detok.flush() == ""


def test_flush_returns_an_unfinished_character_as_replacement(tok: Tokenizer) -> None:
    detok = IncrementalDetokenizer(tok)
    assert detok.push(tok.encode("ok ")) == "ok "
    assert detok.push([tok.token_to_id("ä")]) == ""
    assert detok.flush() == "\ufffd"


def test_window_stays_small_on_long_sequences(tok: Tokenizer) -> None:
    detok = IncrementalDetokenizer(tok)
    ids = tok.encode("The quick brown fox jumps over the lazy dog. " * 50)
    for i in ids:
        detok.push([i])
    assert detok._read - detok._prefix <= 4
    assert len(detok._prefix_text) < 20


@pytest.mark.parametrize("skip", [True, False])
def test_memoized_token_text_is_the_decode_of_the_token_alone(byte_level: Tokenizer,
                                                             skip: bool) -> None:
    """The bytewise push takes a lone token's text from `token_text`: it must be exactly
    `decode([id])`, asked twice (memo filled, then read), for every id of the vocabulary."""
    for _ in range(2):
        for token_id in range(byte_level.vocab_size):
            assert byte_level.token_text(token_id, skip) == byte_level.decode([token_id], skip)
