"""A long text's token ids, encoded as parallel pieces cut where the pre-tokenizer cuts anyway.

Why: the router tokenizes every text prompt on the first token's path, and `tokenizers`
encodes one text on one thread (a 150-word prompt: ~0.3-0.5 ms, most of it the byte-level
regex). `encode_batch` runs several texts on its own thread pool, so a long text cut into
pieces at safe points encodes in a fraction of that, with the same ids.

Contract:
- `splittable(tok)` is True only for tokenizers where cutting is proven to change nothing: no
  normalizer, a BPE model, a byte-level pre-tokenizer without a prefix space whose split regex
  is GPT-2's (optionally after single digits) or Llama-3's / Qwen2's, and no added token whose
  text holds whitespace (added tokens are matched in the raw text before pre-tokenizing).
- `pieces(text, n)` cuts `text` into at most `n` pieces, each cut just before a space that
  follows a non-space character and precedes an ASCII letter. Under each regex above no
  pre-token spans such a point (a pre-token holds a space only as its first character, and a
  whitespace run cannot begin after a non-space character and end at a letter), and the
  pre-token starting at the space depends only on the text after it; BPE never merges across
  pre-tokens. So `encode(a + b) == encode(a) + encode(b)` at every such point, without
  special tokens (`tests/unit/test_split_encode.py` checks it on hostile texts).
- `encode_pieces(tok, text, n)` is that concatenation.
"""

from __future__ import annotations

import itertools
import json

import tokenizers

_GPT2_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
_DIGITS = {"type": "Digits", "individual_digits": True}
# Llama-3 and Qwen2 split regexes (inference/engine/tokenizer.py, and their tokenizer.json).
_SPLIT_REGEXES = frozenset({
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
})
_ASCII_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def splittable(tok: tokenizers.Tokenizer) -> bool:
    """Whether `pieces` cuts leave `tok`'s ids unchanged (see the module contract)."""
    if tok.normalizer is not None or type(tok.model).__name__ != "BPE":
        return False
    if getattr(tok.model, "dropout", None):
        return False
    if any(any(c.isspace() for c in t.content) for t in tok.get_added_tokens_decoder().values()):
        return False
    pre = tok.pre_tokenizer
    return pre is not None and _known_pre_tokenizer(json.loads(pre.__getstate__()))


def _known_pre_tokenizer(spec: dict) -> bool:
    steps = (spec.get("pretokenizers") or []) if spec.get("type") == "Sequence" else [spec]
    if not steps:
        return False
    if _matches(steps[-1], _GPT2_BYTE_LEVEL):
        return all(_matches(s, _DIGITS) for s in steps[:-1])
    if len(steps) != 2 or not _matches(steps[1], {"type": "ByteLevel",
                                                   "add_prefix_space": False}):
        return False
    split = steps[0]
    return (split.get("type") == "Split" and split.get("behavior") == "Isolated"
            and not split.get("invert") and split.get("pattern", {}).get("Regex")
            in _SPLIT_REGEXES)


def _matches(spec: dict, want: dict) -> bool:
    return all(spec.get(k) == v for k, v in want.items())


def pieces(text: str, n: int) -> list[str]:
    """`text` cut into at most `n` pieces at safe points, about evenly (module contract)."""
    cuts = [0]
    size = len(text)
    for k in range(1, n):
        j = _safe_cut(text, max(k * size // n, cuts[-1] + 1))
        if j < 0:
            break
        cuts.append(j)
    cuts.append(size)
    return [text[a:b] for a, b in itertools.pairwise(cuts)]


def _safe_cut(text: str, start: int) -> int:
    """The first safe cut at or after `start`, or -1."""
    j = text.find(" ", start)
    end = len(text) - 1
    while 0 < j < end:
        if not text[j - 1].isspace() and text[j + 1] in _ASCII_LETTERS:
            return j
        j = text.find(" ", j + 1)
    return -1


def encode_pieces(tok: tokenizers.Tokenizer, text: str, n: int) -> list[int]:
    """`tok.encode(text, add_special_tokens=False).ids`, from `n` pieces encoded in parallel.
    Only for a `splittable` tokenizer."""
    parts = pieces(text, n)
    if len(parts) == 1:
        return tok.encode(text, add_special_tokens=False).ids
    batch = getattr(tok, "encode_batch_fast", tok.encode_batch)  # no offsets: faster (0.20+)
    encoded = batch(parts, add_special_tokens=False)
    return [i for e in encoded for i in e.ids]
