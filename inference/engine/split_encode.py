"""A text's token ids, encoded segment by segment with a memo of the segments seen before.

Why: the router tokenizes every text prompt on the first token's path, and `tokenizers` spends
~3 µs a token on one text (a 150-word prompt: 0.15 ms hot, 0.4-0.7 ms after the process slept,
as it does between requests at one stream), most of it the byte-level regex. Prompts share
most of their words and phrases, so a text cut at points where cutting is proven to change
nothing is, segment by segment, mostly a dict lookup away from its ids.

Contract:
- `splittable(tok)` is True only for tokenizers where cutting is proven to change nothing: no
  normalizer, a BPE model without dropout, a byte-level pre-tokenizer without a prefix space
  whose split regex is GPT-2's (optionally after single digits) or Llama-3's / Qwen2's, and no
  added token whose text holds whitespace or that strips the whitespace beside it or matches
  only as a whole word (added tokens are matched in the raw text before pre-tokenizing).
- `segments(text)` cuts `text` just before every space that follows a non-space character and
  precedes one. Under each regex above a pre-token holds a space only as its first character
  or inside a run of whitespace, and such a run cannot take in the non-space before the cut;
  the only lookahead (`\\s+(?!\\S)`) ends a whitespace run, and nothing looks behind. So no
  pre-token spans the cut, and the one starting at the space depends only on the text after
  it; BPE never merges across pre-tokens. So `encode(a + b) == encode(a) + encode(b)` at every
  such point, without special tokens (`tests/unit/test_split_encode.py` checks it on hostile
  texts).
- `SegmentEncoder(tok).encode(text)` is `tok.encode(text, add_special_tokens=False).ids`, for
  a `splittable` tok. A text whose segments are mostly in the memo is the concatenation of
  their ids, each run of missing ones encoded joined; one under `POOL_CHARS` characters that is
  mostly new or misses more than `MAX_RUNS` runs is encoded whole, which costs least, and
  teaches the memo up to `LEARN` of its segments that were missed before. The
  memo holds segments of at most `MEMO_SEGMENT_CHARS` characters, at most `MEMO_ENTRIES` of
  them (it is emptied when full); it is safe to share between threads (a lost entry is only a
  miss). Cost (bench/tokenize_memo.py): ~0.2 µs a segment found; a text mostly new, 1.2 to
  1.5 times a whole encode.
"""

from __future__ import annotations

import itertools
import json
import re

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


def splittable(tok: tokenizers.Tokenizer) -> bool:
    """Whether `pieces` cuts leave `tok`'s ids unchanged (see the module contract)."""
    if tok.normalizer is not None or type(tok.model).__name__ != "BPE":
        return False
    if getattr(tok.model, "dropout", None):
        return False
    if any(_added_token_may_span_a_cut(t) for t in tok.get_added_tokens_decoder().values()):
        return False
    pre = tok.pre_tokenizer
    return pre is not None and _known_pre_tokenizer(json.loads(pre.__getstate__()))


def _added_token_may_span_a_cut(token: tokenizers.AddedToken) -> bool:
    """An added token is matched in the raw text: one holding whitespace may span a cut, and
    one that strips the whitespace beside it (`lstrip`, `rstrip`) or matches only as a whole
    word takes in, or looks at, the space a cut falls before."""
    return (any(c.isspace() for c in token.content) or token.lstrip or token.rstrip
            or token.single_word)


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


_CUT = re.compile(r"(?<=\S)(?= \S)")  # `re`'s \s is str.isspace: see segments()
MEMO_SEGMENT_CHARS = 64  # longer segments (code, numbers, runs without a word) are not kept
MEMO_ENTRIES = 1 << 16
PIECE_CHARS = 256  # missing segments are encoded joined in pieces of about this size
LEARN = 4  # segments of a text encoded in larger pieces, encoded alone too to fill the memo
POOL_CHARS = 1024  # less missing text than this is encoded on the caller's thread
MAX_RUNS = 4  # a shorter text missing more runs of segments than this is encoded whole


def segments(text: str) -> list[str]:
    """`text` cut at every safe point (module contract). Python's whitespace (`\\S` here) is
    a superset of the split regexes' `\\s`, so a cut never has a character they call
    whitespace on either side of its space."""
    return _CUT.split(text)


class SegmentEncoder:
    """Ids of a `splittable` tokenizer's texts, segment by segment through a memo."""

    def __init__(self, tok: tokenizers.Tokenizer) -> None:
        self._tok = tok
        self._batch = getattr(tok, "encode_batch_fast", tok.encode_batch)  # no offsets (0.20+)
        self._memo: dict[str, list[int]] = {}
        self._seen: set[str] = set()  # short segments missed once (see `_learn`)

    def encode(self, text: str) -> list[int]:
        """`tok.encode(text, add_special_tokens=False).ids` (module contract)."""
        parts = segments(text)
        get = self._memo.get
        found = [get(p) for p in parts]
        if None not in found:
            return _joined(found)  # type: ignore[arg-type]
        gaps = [i for i, ids in enumerate(found) if ids is None]
        missing = [parts[i] for i in gaps]
        runs = 1 + sum(b - a > 1 for a, b in itertools.pairwise(gaps))
        if len(text) < POOL_CHARS and (runs > MAX_RUNS or 2 * sum(map(len, missing)) > len(text)):
            # Mostly new, or new in many places: one encode of the whole costs least (a call
            # per run of missing segments does not).
            self._learn(missing)
            return self._tok.encode(text, add_special_tokens=False).ids
        return _joined(self._encode_missing(parts, found))

    def _encode_missing(self, parts: list[str], found: list[list[int] | None]
                        ) -> list[list[int]]:
        """The ids of `parts` in order, from `found` where it has them. A run of missing
        segments is encoded joined, in pieces of about `PIECE_CHARS` characters (on
        `tokenizers`' thread pool when there is enough to share out). A piece of one segment
        is remembered; the segments of longer pieces go to `_learn`."""
        out: list[list[int] | None] = []
        pieces: list[str] = []
        slots: list[int] = []  # where each piece's ids go in `out`
        alone: list[tuple[str, int]] = []  # short pieces of one segment: (piece, its slot)
        joined: list[str] = []  # the segments of pieces of several
        i, n = 0, len(parts)
        while i < n:
            if found[i] is not None:
                out.append(found[i])
                i += 1
                continue
            j, size = i + 1, len(parts[i])
            while j < n and found[j] is None and size + len(parts[j]) <= PIECE_CHARS:
                size += len(parts[j])
                j += 1
            if j - i > 1:
                joined += parts[i:j]
            elif size <= MEMO_SEGMENT_CHARS:
                alone.append((parts[i], len(out)))
            slots.append(len(out))
            out.append(None)
            pieces.append("".join(parts[i:j]))
            i = j
        encoded = self._encode_all(pieces)
        for slot, ids in zip(slots, encoded, strict=True):
            out[slot] = ids
        self._remember([(segment, out[slot]) for segment, slot in alone])  # type: ignore[misc]
        self._learn(joined)
        return out  # type: ignore[return-value]

    def _encode_all(self, texts: list[str]) -> list[list[int]]:
        """Each text's ids: on `tokenizers`' thread pool when there is enough to share out,
        else here (waking the pool's threads costs more than a few short texts take)."""
        if len(texts) > 1 and sum(map(len, texts)) >= POOL_CHARS:
            return [e.ids for e in self._batch(texts, add_special_tokens=False)]
        tok = self._tok
        return [tok.encode(t, add_special_tokens=False).ids for t in texts]

    def _learn(self, missing: list[str]) -> None:
        """Encode and remember up to `LEARN` of the short `missing` segments that were missing
        once before, so the memo fills from texts encoded in larger pieces with what recurs
        (words, not one-off numbers and names)."""
        seen, again = self._seen, []
        for p in missing:
            if len(p) > MEMO_SEGMENT_CHARS:
                continue
            if p not in seen:
                seen.add(p)
            elif len(again) < LEARN:
                again.append(p)
        if len(seen) > MEMO_ENTRIES:
            seen.clear()
        self._remember(list(zip(again, self._encode_all(again), strict=True)))

    def _remember(self, entries: list[tuple[str, list[int]]]) -> None:
        memo = self._memo
        if len(memo) + len(entries) > MEMO_ENTRIES:
            memo.clear()  # rare: a fresh memo refills with what traffic uses now
        for segment, ids in entries[: MEMO_ENTRIES - len(memo)]:
            memo[segment] = ids


def _joined(parts: list[list[int]]) -> list[int]:
    out: list[int] = []
    for ids in parts:
        out += ids
    return out
