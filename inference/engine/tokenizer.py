"""Text ↔ token ids, and the model's chat template.

`Tokenizer` wraps a `tokenizers.Tokenizer` (Rust, fast) and a jinja2 chat template rendered the
way Hugging Face renders it (sandboxed, `trim_blocks`/`lstrip_blocks`, `raise_exception`,
`bos_token`/`eos_token`). It is built either from a Hugging Face folder (`tokenizer.json` +
`tokenizer_config.json`) or from a GGUF file's `tokenizer.*` metadata.

Contract:
- `encode(text)` adds no BOS unless `add_special_tokens=True` (and then only what the
  checkpoint asks for). Special tokens written in the text (`<|im_start|>`) are matched whole.
  Where cutting a text is proven to give the same ids, it is encoded segment by segment
  through a memo of the segments seen before (inference/engine/split_encode.py).
- `decode(ids)` of a concatenation equals the concatenation of `decode`s whenever the split falls
  on a UTF-8 character boundary; `IncrementalDetokenizer` relies on this.
- `eos_token_ids` are every id that ends a generation: the checkpoint's eos plus the turn-end
  token of the chat template when that is a different special token.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import tokenizers
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors

from inference.engine.split_encode import SegmentEncoder, splittable

# llama.cpp `tokenizer.ggml.token_type` value of a control (special) token.
_GGUF_CONTROL = 3
_GGUF_USER_DEFINED = 4

_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")  # a sentencepiece byte token's spelling
# Turn-end markers of common chat templates; a model stops on these as well as on eos.
_TURN_END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _byte_level_pre_tokenizer(pre: str) -> pre_tokenizers.PreTokenizer:
    """The pre-tokenizer for llama.cpp's `tokenizer.ggml.pre` name, as HF spells it."""
    byte_level_regex = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in ("smollm", "starcoder"):
        # SmolLM2's tokenizer.json: every digit on its own, then GPT-2's split.
        return pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level_regex]
        )
    if pre in ("default", "gpt2", "gpt-2"):
        return byte_level_regex
    splits = {"llama3": _LLAMA3_SPLIT, "llama-bpe": _LLAMA3_SPLIT, "llama-v3": _LLAMA3_SPLIT,
              "qwen2": _QWEN2_SPLIT, "deepseek-r1-qwen": _QWEN2_SPLIT}
    if pre in splits:
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(splits[pre]), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    raise ValueError(
        f"unsupported GGUF pre-tokenizer {pre!r} (tokenizer.ggml.pre); supported: "
        f"smollm, starcoder, gpt2, default, {', '.join(sorted(splits))}"
    )


class Tokenizer:
    """A fast tokenizer plus the chat template and the special ids generation needs."""

    def __init__(
        self,
        tok: tokenizers.Tokenizer,
        *,
        chat_template: str | None,
        bos_token_id: int | None,
        eos_token_ids: Sequence[int],
    ) -> None:
        self._tok = tok
        # Each token decodes to its own bytes, whatever precedes it (detokenizer.py).
        self.decodes_bytewise = isinstance(tok.decoder, decoders.ByteLevel)
        self.chat_template = chat_template
        self.vocab_size: int = tok.get_vocab_size(with_added_tokens=True)
        self.bos_token_id = bos_token_id
        self.eos_token_ids: tuple[int, ...] = tuple(dict.fromkeys(eos_token_ids))
        self.bos_token = self._token_or_empty(bos_token_id)
        self.eos_token = self._token_or_empty(self.eos_token_ids[0] if self.eos_token_ids else None)
        self._template: Any = None  # compiled lazily: the router may never render one
        self._segments = SegmentEncoder(tok) if splittable(tok) else None
        # token_text's memo, one dict per `skip_special_tokens` flag
        self._token_texts: dict[bool, dict[int, str]] = {True: {}, False: {}}

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickled as its definition (the engine process sends it to its worker); memos and
        the compiled template are rebuilt, empty, on the other side."""
        return _rebuilt, (self._tok.to_str(), self.chat_template, self.bos_token_id,
                          self.eos_token_ids)

    # ---- construction ---------------------------------------------------------------------

    @classmethod
    def from_hf_folder(cls, path: str | Path) -> Tokenizer:
        """Load `tokenizer.json`, with `tokenizer_config.json` for the template and specials.

        The chat template comes from `chat_template.jinja` when present (newer checkpoints),
        else `tokenizer_config.json`. Extra eos ids come from `generation_config.json`.
        Raises FileNotFoundError without `tokenizer.json`.
        """
        folder = Path(path)
        tok = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
        cfg = _read_json(folder / "tokenizer_config.json")
        template = cfg.get("chat_template")
        if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
            named = {t["name"]: t["template"] for t in template}
            template = named.get("default", next(iter(named.values()), None))
        if (folder / "chat_template.jinja").is_file():
            template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
        bos_id = _special_id(tok, cfg.get("bos_token"))
        eos: list[int] = []
        if (eos_id := _special_id(tok, cfg.get("eos_token"))) is not None:
            eos.append(eos_id)
        gen_eos = _read_json(folder / "generation_config.json").get("eos_token_id")
        eos += gen_eos if isinstance(gen_eos, list) else ([] if gen_eos is None else [gen_eos])
        eos += _turn_end_ids(tok, template)
        return cls(tok, chat_template=template, bos_token_id=bos_id, eos_token_ids=eos)

    def save_hf_folder(self, path: str | Path) -> None:
        """Write `tokenizer.json` and `tokenizer_config.json` (template, bos, eos) into `path`,
        so that `from_hf_folder` reads back this tokenizer (for a GGUF's tokenizer beside an
        HF config: `load_format="dummy"` serving of any shape)."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        self._tok.save(str(folder / "tokenizer.json"))
        cfg = {"chat_template": self.chat_template, "bos_token": self.bos_token or None,
               "eos_token": self.eos_token or None}
        (folder / "tokenizer_config.json").write_text(json.dumps(cfg), encoding="utf-8")

    @classmethod
    def from_gguf_metadata(cls, fields: Mapping[str, Any]) -> Tokenizer:
        """Build a byte-level BPE tokenizer from GGUF `tokenizer.*` metadata values.

        `fields` maps GGUF keys to plain Python values (lists, str, int, bool). Only
        `tokenizer.ggml.model == "gpt2"` (byte-level BPE) is supported; anything else raises
        ValueError, as does an unknown `tokenizer.ggml.pre`.
        """
        kind = fields.get("tokenizer.ggml.model")
        if kind != "gpt2":
            raise ValueError(
                f"unsupported GGUF tokenizer model {kind!r} (tokenizer.ggml.model); "
                "only byte-level BPE ('gpt2') is supported, use a Hugging Face folder instead"
            )
        tokens: list[str] = list(fields["tokenizer.ggml.tokens"])
        types: list[int] = list(fields.get("tokenizer.ggml.token_type") or [1] * len(tokens))
        merges = [tuple(m.split(" ", 1)) for m in fields["tokenizer.ggml.merges"]]
        vocab = {t: i for i, t in enumerate(tokens)}
        tok = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
        tok.pre_tokenizer = _byte_level_pre_tokenizer(fields.get("tokenizer.ggml.pre", "default"))
        tok.decoder = decoders.ByteLevel()
        # Specials must be matched whole in text, never split by BPE; they keep their ids.
        tok.add_special_tokens(
            [AddedToken(t, special=True, normalized=False)
             for t, ty in zip(tokens, types, strict=True) if ty == _GGUF_CONTROL]
        )
        tok.add_tokens(
            [AddedToken(t, special=False, normalized=False)
             for t, ty in zip(tokens, types, strict=True) if ty == _GGUF_USER_DEFINED]
        )
        bos_id = fields.get("tokenizer.ggml.bos_token_id")
        if bos_id is not None and fields.get("tokenizer.ggml.add_bos_token", False):
            bos = tokens[bos_id]
            tok.post_processor = processors.TemplateProcessing(
                single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
            )
        template = fields.get("tokenizer.chat_template")
        eos_id = fields.get("tokenizer.ggml.eos_token_id")
        eos = ([] if eos_id is None else [eos_id]) + _turn_end_ids(tok, template)
        return cls(tok, chat_template=template, bos_token_id=bos_id, eos_token_ids=eos)

    # ---- the hot path: called per request (encode) and per step (decode) ------------------

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of `text`; BOS only when `add_special_tokens` and the checkpoint adds one."""
        if self._segments is not None and not add_special_tokens:
            return self._segments.encode(text)
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids`; invalid UTF-8 (a split character) decodes to U+FFFD."""
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_text(self, token_id: int, skip_special_tokens: bool = True) -> str:
        """`decode([token_id], skip_special_tokens)`, memoized: the detokenizer asks for one
        token's text once per sequence per step. One entry per token and flag at most."""
        memo = self._token_texts[skip_special_tokens]
        text = memo.get(token_id)
        if text is None:
            text = memo[token_id] = self._tok.decode(
                [token_id], skip_special_tokens=skip_special_tokens)
        return text

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes `token_id` stands for (OpenAI's logprob `bytes`, which clients join to
        rebuild a character split over tokens): its text's UTF-8, except for a token holding
        part of a character, whose text shows U+FFFD in its place: then its byte-level
        spelling's bytes (GPT-2's alphabet), or a sentencepiece byte token's `<0xNN>`."""
        text = self.token_text(token_id)
        if "\ufffd" not in text:
            return text.encode()
        spelling = self._tok.id_to_token(token_id) or ""
        if self.decodes_bytewise and all(c in _BYTE_OF_CHAR for c in spelling):
            return bytes(_BYTE_OF_CHAR[c] for c in spelling)
        if byte := _BYTE_FALLBACK.fullmatch(spelling):
            return bytes([int(byte[1], 16)])
        return text.encode()

    def token_text_memo(self, skip_special_tokens: bool = True) -> dict[int, str]:
        """The dict `token_text` fills for this flag (token id -> text): a hot caller looks
        there first and calls `token_text` on a miss. Read it; never write it."""
        return self._token_texts[skip_special_tokens]

    def id_to_token(self, token_id: int) -> str | None:
        """The vocabulary entry of `token_id` (byte-level spelling), or None if out of range."""
        return self._tok.id_to_token(token_id)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def to_json(self) -> str:
        """The tokenizer as Hugging Face `tokenizer.json` text (the grammar engine reads it)."""
        return self._tok.to_str()

    # ---- chat -----------------------------------------------------------------------------

    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = True,
        **extra: Any,
    ) -> str:
        """Render `messages` with the checkpoint's chat template, as transformers would.

        `extra` reaches the template as variables (e.g. `tools`). Raises ValueError when the
        checkpoint has no template, and jinja2.TemplateError from `raise_exception`.
        """
        if self.chat_template is None:
            raise ValueError("this model has no chat template; send a plain completion instead")
        if self._template is None:
            self._template = compile_template(self.chat_template)
        return self._template.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
            **extra,
        )

    def _token_or_empty(self, token_id: int | None) -> str:
        return "" if token_id is None else (self._tok.id_to_token(token_id) or "")


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet inverted: the character a byte-level vocabulary spells each
    byte with -> that byte (printable Latin-1 bytes as themselves, the rest from U+0100 on)."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
                 *range(ord("\u00ae"), ord("\u00ff") + 1)}
    shifted = iter(range(256, 512))
    return {chr(b if b in printable else next(shifted)): b for b in range(256)}


_BYTE_OF_CHAR = _byte_level_alphabet()


def _rebuilt(tok_json: str, chat_template: str | None, bos_token_id: int | None,
             eos_token_ids: tuple[int, ...]) -> Tokenizer:
    return Tokenizer(tokenizers.Tokenizer.from_str(tok_json), chat_template=chat_template,
                     bos_token_id=bos_token_id, eos_token_ids=eos_token_ids)


def compile_template(source: str) -> Any:
    """Compile a chat template in the sandbox with transformers' globals and filters."""
    from jinja2.exceptions import TemplateError
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None,
               separators: Any = None, sort_keys: bool = False) -> str:
        # jinja's own tojson escapes HTML characters; templates expect plain JSON.
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent,
                          separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _special_id(tok: tokenizers.Tokenizer, token: Any) -> int | None:
    """Id of a special token given as a string or as HF's `{"content": ...}` dict."""
    if isinstance(token, dict):
        token = token.get("content")
    return tok.token_to_id(token) if isinstance(token, str) else None


def _turn_end_ids(tok: tokenizers.Tokenizer, template: str | None) -> list[int]:
    """Ids of known turn-end tokens that the chat template writes after each message."""
    if not template:
        return []
    ids = (tok.token_to_id(t) for t in _TURN_END_TOKENS if t in template)
    return [i for i in ids if i is not None]
