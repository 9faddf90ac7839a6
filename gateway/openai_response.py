"""OpenAI response objects built from wire chunks: whole responses and streaming chunks.

Shapes follow the OpenAI API exactly (`chat.completion`, `chat.completion.chunk`,
`text_completion`), so official clients parse them. `Gather` accumulates the chunks of a
non-streaming request; `StreamShape` makes the SSE payloads of a streaming one. With tools
(`tool_names` not empty) a chat answer's tool calls are parsed out of its text
(gateway/tool_calls.py) into `message.tool_calls`, or streamed as tool-call deltas (id and name
first, then the arguments), and `finish_reason` is `tool_calls`; with `parallel_tool_calls`
false only the first call is kept, streamed or not. A call cut off by max_tokens is still a
call (its arguments as far as written; `named_tool`, the function `tool_choice` names, names
one cut off before its name), and `finish_reason` stays `length`. A reasoning model's leading
`<think>...</think>` goes to `reasoning_content` (gateway/reasoning.py). With `echo`, a
completion's choices start with the prompt (a chunk's `prompt`, which covers choices index ..
index + n - 1): its text, and with logprobs its tokens (the first with `null` logprob and top
logprobs, as OpenAI), before the generated ones.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from gateway.reasoning import ReasoningSplit, split_reasoning
from gateway.tool_calls import ToolCallStream, call_json, split_tool_calls
from kvmesh.wire import Chunk, Logprob, PromptEcho, ToolCall, TopLogprob, UsageInfo


def usage_json(u: UsageInfo | None) -> dict[str, Any] | None:
    """Chat and completions usage. `prompt_tokens_details.cached_tokens` is always there (0 on
    a prefix-cache miss), as OpenAI sends it, so a client reads it without a None check.
    `completion_tokens_details` is left out: the gateway does not count reasoning tokens."""
    if u is None:
        return None
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "total_tokens": u.prompt_tokens + u.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": u.cached_tokens}}


def finish_reason(reason: str | None) -> str | None:
    return "stop" if reason == "abort" else reason


def chat_logprobs(lps: list[Logprob] | None) -> dict[str, Any] | None:
    if lps is None:
        return None
    return {"content": [
        {"token": lp.token, "logprob": lp.logprob, "bytes": token_bytes(lp),
         "top_logprobs": [{"token": t.token, "logprob": t.logprob, "bytes": token_bytes(t)}
                          for t in lp.top]}
        for lp in lps]}


def token_bytes(lp: Logprob | TopLogprob) -> list[int]:
    """A token's bytes as OpenAI lists them: joined over a character's tokens they give the
    character, where each token's text shows U+FFFD (kvmesh/wire: `token_bytes`)."""
    return list(lp.token.encode() if lp.token_bytes is None else lp.token_bytes)


def completion_logprobs(lps: list[Logprob] | None, offset: int,
                        echo: PromptEcho | None = None) -> dict[str, Any] | None:
    """Legacy completions logprobs; `offset` is the first token's `text_offset`. A token's
    offset is the sum of the lengths of the tokens before it in its choice (an echoed
    prompt's too), streamed or not: where a stop string held text back, or a character split
    over tokens shows U+FFFD in each, the texts joined and the text differ, and offsets
    counted from the text would differ between the two. With `echo` (holding prompt
    logprobs) the prompt's tokens come first. Each position's `top_logprobs` holds its own
    token beside the alternatives (`_top`)."""
    if lps is None:
        return None
    out: dict[str, Any] = {"tokens": [], "token_logprobs": [], "top_logprobs": [],
                           "text_offset": []}
    if echo is not None and echo.logprobs is not None:
        out = prompt_logprobs(echo)
        offset += sum(map(len, echo.tokens))
    for lp in lps:
        out["text_offset"].append(offset)
        offset += len(lp.token)
    out["tokens"] += [lp.token for lp in lps]
    out["token_logprobs"] += [lp.logprob for lp in lps]
    out["top_logprobs"] += [_top(lp) for lp in lps]
    return out


def _top(lp: Logprob) -> dict[str, float]:
    """A position's `top_logprobs` in legacy completions: the chosen token first, then the
    alternatives, so up to `logprobs` + 1 entries (OpenAI: "the API will always return the
    logprob of the sampled token"; vLLM alike, `logprobs: 0` giving the chosen one alone)."""
    return {lp.token: lp.logprob, **{t.token: t.logprob for t in lp.top}}


def prompt_logprobs(echo: PromptEcho) -> dict[str, Any]:
    """The prompt's part of echoed logprobs: its first token has none (null), as OpenAI."""
    lps = echo.logprobs or []
    offsets, at = [], 0
    for token in echo.tokens:
        offsets.append(at)
        at += len(token)
    return {"tokens": list(echo.tokens),
            "token_logprobs": [None, *(lp.logprob for lp in lps)],
            "top_logprobs": [None, *map(_top, lps)],
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
    tool_names: frozenset[str] = frozenset()
    parallel_tool_calls: bool = True
    named_tool: str | None = None
    choices: dict[int, Choice] = field(default_factory=dict)
    usage: UsageInfo | None = None
    echoes: dict[int, PromptEcho] = field(default_factory=dict)  # by first choice index

    def add(self, c: Chunk) -> None:
        if c.prompt is not None:
            self.echoes[c.index] = c.prompt
        ch = self.choices.setdefault(c.index, Choice(logprobs=[] if self.want_logprobs else None))
        ch.text.append(c.text)
        if c.logprobs and ch.logprobs is not None:
            ch.logprobs.extend(c.logprobs)
        if c.finish_reason is not None:
            ch.finish_reason = finish_reason(c.finish_reason)
        if c.usage is not None:
            self.usage = c.usage

    def chat(self, rid: str, created: int, model: str) -> dict[str, Any]:
        choices = [{"index": i, **self._message(c), "logprobs": chat_logprobs(c.logprobs)}
                   for i, c in sorted(self.choices.items())]
        return {"id": rid, "object": "chat.completion", "created": created, "model": model,
                "choices": choices, "usage": usage_json(self.usage)}

    def _message(self, c: Choice) -> dict[str, Any]:
        reasoning, text = split_reasoning("".join(c.text))
        extra = {} if reasoning is None else {"reasoning_content": reasoning}
        if not self.tool_names:
            return {"message": {"role": "assistant", "content": text, **extra},
                    "finish_reason": c.finish_reason}
        content, calls = split_tool_calls(text, self.tool_names, self.parallel_tool_calls,
                                          self.named_tool, c.finish_reason == "length")
        message: dict[str, Any] = {"role": "assistant", "content": content, **extra}
        if calls:
            message["tool_calls"] = [call_json(t) for t in calls]
        reason = "tool_calls" if calls and c.finish_reason == "stop" else c.finish_reason
        return {"message": message, "finish_reason": reason}

    def completion(self, rid: str, created: int, model: str) -> dict[str, Any]:
        choices = []
        for i, c in sorted(self.choices.items()):
            echo = self.echoes.get(i - i % self.n)
            text = "".join(c.text) if echo is None else echo.text + "".join(c.text)
            choices.append({"index": i, "text": text,
                            "logprobs": completion_logprobs(c.logprobs, 0, echo),
                            "finish_reason": c.finish_reason})
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
    tool_names: frozenset[str] = frozenset()
    n: int = 1  # choices per prompt: an echoed prompt starts n of them
    parallel_tool_calls: bool = True
    named_tool: str | None = None
    token_len: dict[int, int] = field(default_factory=dict)  # the next `text_offset`, by choice
    tool_streams: dict[int, ToolCallStream] = field(default_factory=dict)
    calls_sent: dict[int, int] = field(default_factory=dict)  # tool calls streamed, by choice
    reasoning: dict[int, ReasoningSplit] = field(default_factory=dict)

    def _wrap(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        out: dict[str, Any] = {"id": self.rid, "object": obj, "created": self.created,
                               "model": self.model, "choices": choices}
        if self.include_usage:
            out["usage"] = None
        return out

    def role(self, index: int) -> dict[str, Any]:
        """The chat stream's first chunk of a choice: the role, and content "" (OpenAI's first
        chunk of a text answer), or null when the request has tools: the answer may be calls
        alone, whose content is null (as OpenAI streams it, and as the non-streamed answer
        says; a client that folds the deltas gets null, not "")."""
        content = None if self.tool_names else ""
        return self._wrap([{"index": index, "delta": {"role": "assistant", "content": content},
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
        offset = self.token_len.get(c.index, 0)
        if c.logprobs:
            self.token_len[c.index] = offset + sum(len(lp.token) for lp in c.logprobs)
        return self._wrap([{"index": c.index, "text": c.text,
                            "logprobs": completion_logprobs(c.logprobs, offset),
                            "finish_reason": reason}])

    def payloads(self, c: Chunk) -> list[dict[str, Any]]:
        """Every payload for chunk `c` (none when it carries nothing to show)."""
        if self.kind != "chat":
            out = [] if c.prompt is None else self._echo(c.index, c.prompt)
            payload = self.delta(c)
            return out if payload is None else [*out, payload]
        split = self.reasoning.setdefault(c.index, ReasoningSplit())
        reasoning, text = split.feed(c.text)
        if c.finish_reason is not None:
            more = split.finish()
            reasoning, text = reasoning + more[0], text + more[1]
        out = [self._choice(c.index, {"reasoning_content": reasoning}, None)] if reasoning else []
        if not self.tool_names:
            payload = self.delta(dataclasses.replace(c, text=text))
            return out if payload is None else [*out, payload]
        stream = self.tool_streams.setdefault(
            c.index, ToolCallStream(self.tool_names, self.parallel_tool_calls, self.named_tool))
        events = stream.feed(text)
        if c.finish_reason is not None:
            events += stream.finish(cut_off=c.finish_reason == "length")
        for e in events:
            if isinstance(e, ToolCall):
                k = self.calls_sent.get(c.index, 0)
                self.calls_sent[c.index] = k + 1
                out.extend(self._tool_call_deltas(c.index, k, e))
            elif e:
                out.append(self._choice(c.index, {"content": e}, None))
        if c.logprobs:
            out.append(self._wrap([{"index": c.index, "delta": {},
                                    "logprobs": chat_logprobs(c.logprobs),
                                    "finish_reason": None}]))
        if c.finish_reason is not None:
            reason = finish_reason(c.finish_reason)
            if self.calls_sent.get(c.index) and reason == "stop":
                reason = "tool_calls"
            out.append(self._choice(c.index, {}, reason))
        return out

    def _echo(self, first: int, echo: PromptEcho) -> list[dict[str, Any]]:
        """The prompt as the first delta of choices first .. first + n - 1."""
        lps = None if echo.logprobs is None else prompt_logprobs(echo)
        out = []
        for index in range(first, first + self.n):
            self.token_len[index] = sum(map(len, echo.tokens))
            out.append(self._wrap([{"index": index, "text": echo.text, "logprobs": lps,
                                    "finish_reason": None}]))
        return out

    def _choice(self, index: int, delta: dict[str, Any], reason: str | None) -> dict[str, Any]:
        return self._wrap([{"index": index, "delta": delta, "logprobs": None,
                            "finish_reason": reason}])

    def _tool_call_deltas(self, index: int, k: int, call: ToolCall) -> list[dict[str, Any]]:
        """As OpenAI streams a call: its id, type and name with empty arguments, then the
        arguments (in one piece: the call is parsed whole before it is sent)."""
        head = {"index": k, "id": call.id, "type": "function",
                "function": {"name": call.name, "arguments": ""}}
        body = {"index": k, "function": {"arguments": call.arguments}}
        return [self._choice(index, {"tool_calls": [head]}, None),
                self._choice(index, {"tool_calls": [body]}, None)]

    def usage(self, u: UsageInfo | None) -> dict[str, Any]:
        out = self._wrap([])
        out["usage"] = usage_json(u)
        return out
