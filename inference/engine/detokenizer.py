"""Incremental detokenisation: token ids in, text safe to show out.

Invariant (tested): for any token sequence pushed in any chunking,
`"".join(pieces) + flush() == tokenizer.decode(all_ids)` exactly, and no piece ends in half a
UTF-8 character (a tail decoding to U+FFFD is held back until later tokens complete it, or
until `flush`).

How (vLLM's prefix/read offsets): `ids[prefix:read]` are the tokens of the last emitted piece,
kept as left context; `ids[read:]` are not yet shown. Each push decodes only
`ids[prefix:]` and diffs it against `decode(ids[prefix:read])`, so a step costs O(window),
not O(sequence). The context matters for decoders that treat the first token specially
(sentencepiece's leading-space strip) and keeps each window starting on a character
boundary: `read` only advances when the decoded text ends in a whole character, and UTF-8
decoding after a whole character starts afresh, so window decodes concatenate to the full one.

A byte-level decoder (`Tokenizer.decodes_bytewise`: GPT-2 style BPE, as Llama 3, Qwen and
SmolLM2 use) maps each token to its bytes whatever precedes it, so it needs no left context:
a push decodes just `ids[read:]`, one short decode instead of two (the hot path: once per
step per sequence, `push_one`). When nothing is held back that is one token, whose text the
tokenizer memoizes (`Tokenizer.token_text`), so most pushes make no tokenizer call at all.
"""

from __future__ import annotations

from collections.abc import Sequence

from .tokenizer import Tokenizer

_REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """Per-sequence streaming decoder; not thread-safe, one per generated choice."""

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = True) -> None:
        self._tok = tokenizer
        self._skip = skip_special_tokens
        self._bytewise = tokenizer.decodes_bytewise
        self._ids: list[int] = []
        self._prefix = 0  # start of the left-context window
        self._read = 0  # end of what has been emitted
        self._prefix_text = ""  # decode(ids[prefix:read]), cached: it never changes until moved
        self._memo = tokenizer.token_text_memo(skip_special_tokens)

    @property
    def token_ids(self) -> list[int]:
        """Every id pushed so far (do not mutate)."""
        return self._ids

    def push(self, token_ids: Sequence[int]) -> str:
        """Append `token_ids`; return the new text that is safe to show (maybe "")."""
        if len(token_ids) == 1:
            return self.push_one(token_ids[0])
        return self._append(token_ids)

    def push_one(self, token_id: int) -> str:
        """`push([token_id])`. Hot path (once per sequence per step): a byte-level decoder
        with nothing held back reads the token's memoized text, with no call in between."""
        if self._bytewise and self._read == len(self._ids):
            self._ids.append(token_id)
            text = self._memo.get(token_id)
            if text is None:
                text = self._tok.token_text(token_id, self._skip)
            if not text or text.endswith(_REPLACEMENT):  # `_shown`, inlined: the hot path
                return ""
            self._prefix = self._read = len(self._ids)
            return text
        return self._append((token_id,))

    def _append(self, token_ids: Sequence[int]) -> str:
        """`push` the general way: decode only the window (see the module doc)."""
        self._ids.extend(token_ids)
        if self._bytewise:
            return self._shown(
                self._tok.decode(self._ids[self._read :], skip_special_tokens=self._skip))
        text = self._tok.decode(self._ids[self._prefix :], skip_special_tokens=self._skip)
        if len(text) <= len(self._prefix_text) or text.endswith(_REPLACEMENT):
            return ""  # nothing new, or the tail is half a character: wait for more bytes
        new = text[len(self._prefix_text) :]
        self._prefix, self._read = self._read, len(self._ids)
        # Re-decode the window without its own left context: that is how the next push sees it.
        self._prefix_text = self._tok.decode(
            self._ids[self._prefix : self._read], skip_special_tokens=self._skip
        )
        return new

    def _shown(self, text: str) -> str:
        """Bytewise: the decode of every id not yet shown is `text`; show it unless it is
        empty or ends in half a character (then it waits for the next push)."""
        if not text or text.endswith(_REPLACEMENT):
            return ""
        self._prefix = self._read = len(self._ids)
        return text

    def flush(self) -> str:
        """The rest of the text at finish, invalid bytes included as U+FFFD."""
        text = self._tok.decode(self._ids[self._prefix :], skip_special_tokens=self._skip)
        rest = text[len(self._prefix_text) :]
        self._prefix = self._read = len(self._ids)
        self._prefix_text = ""
        return rest
