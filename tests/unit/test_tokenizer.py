"""Our tokenizer, built from the GGUF's metadata, matches transformers' on the same file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inference.engine.tokenizer import Tokenizer

TEXTS = [
    "Hello, world!",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\n\n\nblank lines",
    "numbers 12345 and 3.14159, 1,000,000 and 2024-06-01",
    "a1b22c333 x0",
    "unicode: naïve café, Straße, Ελληνικά, русский",
    "CJK 中文字符 日本語のテキスト 한국어",
    "emoji 😀👍🏽 🇫🇷 👨‍👩‍👧",
    "def f(x: int) -> int:\n    return x ** 2  # square\n",
    "<|im_start|>user\nhi<|im_end|>\n",
    "don't won't I'm we'll they've",
    "",
    " ",
    "\u200b zero width and \u00a0 nbsp",
]

MESSAGES = [
    [{"role": "user", "content": "What is 2+2?"}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye 👋"},
    ],
]


@pytest.fixture(scope="module")
def ours(smollm_gguf: Path) -> Tokenizer:
    from inference.engine.gguf_loader import read_metadata

    return Tokenizer.from_gguf_metadata(read_metadata(smollm_gguf))


@pytest.fixture(scope="module")
def reference(smollm_gguf: Path):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(
        smollm_gguf.parent, gguf_file=smollm_gguf.name
    )


def test_special_ids_of_smollm2(ours: Tokenizer) -> None:
    assert ours.vocab_size == 49152
    assert ours.id_to_token(0) == "<|endoftext|>"
    assert ours.bos_token_id == 1 and ours.bos_token == "<|im_start|>"
    # SmolLM2's eos *is* the turn end: id 2 is <|im_end|>.
    assert ours.eos_token_ids == (2,)
    assert ours.id_to_token(2) == "<|im_end|>"


@pytest.mark.parametrize("text", TEXTS)
def test_encode_matches_transformers(ours: Tokenizer, reference, text: str) -> None:
    want = reference.encode(text, add_special_tokens=False)
    assert ours.encode(text) == want
    assert ours.encode(text) == want


@pytest.mark.parametrize("text", TEXTS)
def test_decode_matches_transformers(ours: Tokenizer, reference, text: str) -> None:
    ids = reference.encode(text, add_special_tokens=False)
    for skip in (True, False):
        assert ours.decode(ids, skip_special_tokens=skip) == reference.decode(
            ids, skip_special_tokens=skip
        )


@pytest.mark.parametrize("text", [t for t in TEXTS if "<|" not in t])
def test_roundtrip_is_exact(ours: Tokenizer, text: str) -> None:
    assert ours.decode(ours.encode(text)) == text


def test_digits_are_split_one_by_one(ours: Tokenizer) -> None:
    ids = ours.encode("x 2024")
    assert [ours.decode([i]) for i in ids][-4:] == ["2", "0", "2", "4"]


def test_special_tokens_in_text_stay_whole(ours: Tokenizer) -> None:
    assert ours.encode("<|im_start|>") == [1]
    assert ours.decode([1, 28120, 2]) == "hello"


@pytest.mark.parametrize("messages", MESSAGES)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_chat_template_matches_transformers(
    ours: Tokenizer, reference, messages, add_generation_prompt: bool
) -> None:
    expected = reference.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    assert ours.apply_chat_template(messages, add_generation_prompt) == expected


def test_raise_exception_in_template_surfaces() -> None:
    from jinja2.exceptions import TemplateError
    from tokenizers import Tokenizer as Fast
    from tokenizers import models

    fast = Fast(models.BPE(vocab={"a": 0}, merges=[]))
    tok = Tokenizer(
        fast,
        chat_template="{{ raise_exception('roles must alternate') }}",
        bos_token_id=None,
        eos_token_ids=[],
    )
    with pytest.raises(TemplateError, match="roles must alternate"):
        tok.apply_chat_template([{"role": "user", "content": "x"}])


def test_unsupported_gguf_tokenizer_model_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unsupported GGUF tokenizer model 'llama'"):
        Tokenizer.from_gguf_metadata({"tokenizer.ggml.model": "llama"})


def test_from_hf_folder_reads_template_and_specials(ours: Tokenizer, tmp_path: Path) -> None:
    ours._tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": "<|im_start|>",
                "eos_token": {"content": "<|im_end|>"},
                "chat_template": ours.chat_template,
            }
        )
    )
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0]}))
    tok = Tokenizer.from_hf_folder(tmp_path)
    assert tok.bos_token_id == 1
    assert tok.eos_token_ids == (2, 0)
    assert tok.encode("numbers 12345") == ours.encode("numbers 12345")
    messages = MESSAGES[1]
    assert tok.apply_chat_template(messages) == ours.apply_chat_template(messages)


def test_long_text_matches_transformers(ours: Tokenizer, reference) -> None:
    """Texts are encoded segment by segment through a memo (split_encode.py): still
    transformers' ids, on the first encode and from the memo."""
    text = " ".join(TEXTS) * 12
    assert len(text) > 2048
    want = reference.encode(text, add_special_tokens=False)
    assert ours.encode(text) == want
    assert ours.encode(text) == want


def test_token_bytes_rebuild_characters_split_over_tokens(ours: Tokenizer) -> None:
    """Each token of a split character decodes to U+FFFD alone; its bytes are its own."""
    tok = ours
    for text in (" 🚀", "héllo 中文字符 😀😀", "plain"):
        ids = list(tok.encode(text))
        assert b"".join(tok.token_bytes(i) for i in ids) == text.encode()
    assert any("\ufffd" in tok.token_text(i) for i in tok.encode(" 🚀"))
