"""Reasoning content: a reasoning model's leading `<think>...</think>` split off its answer.

Reasoning models (Qwen3, DeepSeek-R1 distills) open their answer with `<think>`, reason, close
with `</think>` and then answer. The reasoning goes to `message.reasoning_content` (streamed as
the `reasoning_content` delta field, as vLLM and DeepSeek's API send it); `content` is what
follows. Only an answer that starts with `<think>` (after whitespace) is split, so other models'
answers pass through unchanged; text is held back only while it could still be that tag.
"""

from __future__ import annotations

from dataclasses import dataclass

OPEN = "<think>"
CLOSE = "</think>"


@dataclass
class ReasoningSplit:
    """Feed an answer's text pieces in order; get (reasoning, content) pieces out."""

    _state: str = "start"  # start -> reasoning -> content, or start -> content
    _buf: str = ""
    _after_close: bool = False  # newlines right after </think> are not content

    def feed(self, text: str) -> tuple[str, str]:
        if self._state == "content":
            return "", self._content(text)
        self._buf += text
        if self._state == "start":
            head = self._buf.lstrip()
            if not head or (OPEN.startswith(head) and head != OPEN):
                return "", ""
            if not head.startswith(OPEN):
                self._state = "content"
                buf, self._buf = self._buf, ""
                return "", buf
            self._state = "reasoning"
            self._buf = head[len(OPEN):]
        end = self._buf.find(CLOSE)
        if end >= 0:
            reasoning, rest = self._buf[:end], self._buf[end + len(CLOSE):]
            self._state, self._buf, self._after_close = "content", "", True
            return reasoning, self._content(rest)
        keep = next((n for n in range(min(len(CLOSE) - 1, len(self._buf)), 0, -1)
                     if self._buf.endswith(CLOSE[:n])), 0)
        reasoning, self._buf = self._buf[: len(self._buf) - keep], self._buf[len(self._buf) - keep:]
        return reasoning, ""

    def _content(self, text: str) -> str:
        if self._after_close:
            text = text.lstrip("\n")
            self._after_close = not text
        return text

    def finish(self) -> tuple[str, str]:
        """What is still held when the answer ends (reasoning cut off stays reasoning)."""
        buf, self._buf = self._buf, ""
        return (buf, "") if self._state == "reasoning" else ("", buf)


def split_reasoning(text: str) -> tuple[str | None, str]:
    """(reasoning or None, content) of a whole answer."""
    split = ReasoningSplit()
    r1, c1 = split.feed(text)
    r2, c2 = split.finish()
    return (r1 + r2 if text.lstrip().startswith(OPEN) else None), c1 + c2
