"""OpenAI response objects built from wire chunks: whole responses and streaming chunks.

Shapes follow the OpenAI API exactly (`chat.completion`, `chat.completion.chunk`,
`text_completion`), so official clients parse them. `Gather` accumulates the chunks of a
non-streaming request; the `*_chunk` helpers make one SSE payload each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kvmesh.wire import Chunk, Logprob, UsageInfo


def usage_json(u: UsageInfo | None) -> dict[str, Any] | None:
    if u is None:
        return None
    out: dict[str, Any] = {"prompt_tokens": u.prompt_tokens,
                           "completion_tokens": u.completion_tokens,
                           "total_tokens": u.prompt_tokens + u.completion_tokens}
    if u.cached_tokens:
        out["prompt_tokens_details"] = {"cached_tokens": u.cached_tokens}
    return out


def finish_reason(reason: str | None) -> str | None:
    return "stop" if reason == "abort" else reason


def chat_logprobs(lps: list[Logprob] | None) -> dict[str, Any] | None:
    if lps is None:
        return None
    return {"content": [
        {"token": lp.token, "logprob": lp.logprob, "bytes": list(lp.token.encode()),
         "top_logprobs": [{"token": t.token, "logprob": t.logprob,
                           "bytes": list(t.token.encode())} for t in lp.top]}
        for lp in lps]}


def completion_logprobs(lps: list[Logprob] | None, offset: int) -> dict[str, Any] | None:
    """Legacy completions logprobs; `offset` is the text length before these tokens."""
    if lps is None:
        return None
    offsets = []
    for lp in lps:
        offsets.append(offset)
        offset += len(lp.token)
    return {"tokens": [lp.token for lp in lps],
            "token_logprobs": [lp.logprob for lp in lps],
            "top_logprobs": [{t.token: t.logprob for t in lp.top} for lp in lps],
            "text_offset": offsets}


@dataclass
class Choice:
    text: list[str] = field(default_factory=list)
    logprobs: list[Logprob] | None = None
    finish_reason: str | None = None


@dataclass
class Gather:
    """All chunks of one non-streaming request, by choice."""

    n: int
    want_logprobs: bool
    choices: dict[int, Choice] = field(default_factory=dict)
    usage: UsageInfo | None = None

    def add(self, c: Chunk) -> None:
        ch = self.choices.setdefault(c.index, Choice(logprobs=[] if self.want_logprobs else None))
        ch.text.append(c.text)
        if c.logprobs and ch.logprobs is not None:
            ch.logprobs.extend(c.logprobs)
        if c.finish_reason is not None:
            ch.finish_reason = finish_reason(c.finish_reason)
        if c.usage is not None:
            self.usage = c.usage

    def chat(self, rid: str, created: int, model: str) -> dict[str, Any]:
        choices = [{"index": i, "message": {"role": "assistant", "content": "".join(c.text)},
                    "logprobs": chat_logprobs(c.logprobs), "finish_reason": c.finish_reason}
                   for i, c in sorted(self.choices.items())]
        return {"id": rid, "object": "chat.completion", "created": created, "model": model,
                "choices": choices, "usage": usage_json(self.usage)}

    def completion(self, rid: str, created: int, model: str) -> dict[str, Any]:
        choices = [{"index": i, "text": "".join(c.text),
                    "logprobs": completion_logprobs(c.logprobs, 0),
                    "finish_reason": c.finish_reason}
                   for i, c in sorted(self.choices.items())]
        return {"id": rid, "object": "text_completion", "created": created, "model": model,
                "choices": choices, "usage": usage_json(self.usage)}


@dataclass
class StreamShape:
    """Builds the SSE payloads of one streaming request (chat or completion)."""

    kind: str
    rid: str
    created: int
    model: str
    include_usage: bool
    text_len: dict[int, int] = field(default_factory=dict)

    def _wrap(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        out: dict[str, Any] = {"id": self.rid, "object": obj, "created": self.created,
                               "model": self.model, "choices": choices}
        if self.include_usage:
            out["usage"] = None
        return out

    def role(self, index: int) -> dict[str, Any]:
        """The chat stream's first chunk of a choice: the role, empty content."""
        return self._wrap([{"index": index, "delta": {"role": "assistant", "content": ""},
                            "logprobs": None, "finish_reason": None}])

    def delta(self, c: Chunk) -> dict[str, Any] | None:
        """The payload for chunk `c`, or None when it carries nothing to show."""
        if not c.text and not c.logprobs and c.finish_reason is None:
            return None
        reason = finish_reason(c.finish_reason)
        if self.kind == "chat":
            delta: dict[str, Any] = {"content": c.text} if c.text or c.logprobs else {}
            return self._wrap([{"index": c.index, "delta": delta,
                                "logprobs": chat_logprobs(c.logprobs), "finish_reason": reason}])
        offset = self.text_len.get(c.index, 0)
        self.text_len[c.index] = offset + len(c.text)
        return self._wrap([{"index": c.index, "text": c.text,
                            "logprobs": completion_logprobs(c.logprobs, offset),
                            "finish_reason": reason}])

    def usage(self, u: UsageInfo | None) -> dict[str, Any]:
        out = self._wrap([])
        out["usage"] = usage_json(u)
        return out
