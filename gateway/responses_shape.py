"""OpenAI Response objects and the Responses stream's events, built from the chat path's answer.

`ResponseFrame` makes the Response object (`object: "response"`) at any status; its `output`
holds `message` items (one `output_text` part) and `function_call` items, so the openai
client's `response.output_text` and tool loops work. A stop at `max_output_tokens` is status
`incomplete` with `incomplete_details.reason` `max_output_tokens`, as OpenAI reports it.

`EventStream` turns the chat stream's payloads (gateway/openai_response.py `StreamShape`,
which already splits tool calls out of the text) into Responses events, in OpenAI's order:
`response.created`, `response.in_progress`, then per output item `response.output_item.added`,
for a message `response.content_part.added`, `response.output_text.delta`...,
`response.output_text.done`, `response.content_part.done`, for a call
`response.function_call_arguments.delta`/`.done`, then `response.output_item.done`; last
`response.completed` (or `response.incomplete`). With logprobs asked for (`include`), each
`response.output_text.delta` carries those of its tokens, and the `output_text` part and
`response.output_text.done` all of them, in chat's shape (`token`, `logprob`, `bytes`,
`top_logprobs`). A call cut off by max_output_tokens is a
`function_call` item of status `incomplete`. An error after the stream started is an `error`
event (kvmesh's code), then `response.failed` (OpenAI's code: `response_error`). Every event
carries `sequence_number` 0, 1, 2... Work is per batch of chunks, never per token.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from gateway.openai_response import StreamShape
from gateway.responses_request import ResponsesRequest, new_id
from kvmesh.wire import ChatMessage, Chunk, ToolCall, UsageInfo


def usage_json(u: UsageInfo | None) -> dict[str, Any] | None:
    """A Response's usage, every field openai-python's `ResponseUsage` requires. Nothing is
    billed as a cache write (the prefix cache fills by itself) and reasoning tokens are not
    counted, so `cache_write_tokens` and `reasoning_tokens` are 0."""
    if u is None:
        return None
    return {"input_tokens": u.prompt_tokens,
            "input_tokens_details": {"cached_tokens": u.cached_tokens, "cache_write_tokens": 0},
            "output_tokens": u.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": u.prompt_tokens + u.completion_tokens}


# kvmesh's error codes that have an equal among the `code`s openai-python's `ResponseError`
# allows (types/responses/response_error.py, a Literal); every other one is `server_error`.
RESPONSE_ERROR_CODES = {"rate_limit_exceeded": "rate_limit_exceeded",
                        "context_length_exceeded": "invalid_prompt"}


def response_error(code: str | None, message: str) -> dict[str, Any]:
    """A failed Response's `error`: OpenAI's code for kvmesh's `code`, and the message, which
    names kvmesh's own code (`worker_died`, `worker_timeout`, ...) since it says more."""
    return {"code": RESPONSE_ERROR_CODES.get(code or "", "server_error"),
            "message": f"{message} ({code})" if code else message}


def message_item(item_id: str, text: str, status: str,
                 logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "role": "assistant", "status": status,
            "content": [] if status == "in_progress" else [_text_part(text, logprobs)]}


def _text_part(text: str, logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs or []}


def call_item(item_id: str, call: ToolCall, status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "call_id": call.id, "name": call.name,
            "arguments": call.arguments if status != "in_progress" else "", "status": status}


def call_status(call: ToolCall) -> str:
    """A finished call item's status: `incomplete` when max_output_tokens cut its arguments
    off (they are no JSON object yet: gateway/tool_calls.py `cut_off_call`)."""
    try:
        whole = isinstance(json.loads(call.arguments), dict)
    except ValueError:
        whole = False
    return "completed" if whole else "incomplete"


def status_of(finish_reason: str | None) -> str:
    return "incomplete" if finish_reason == "length" else "completed"


def as_message(text: str, calls: list[ToolCall]) -> ChatMessage:
    """An answer as the assistant turn of the chat history it continues."""
    return ChatMessage("assistant", text, tool_calls=calls or None)


@dataclass
class ResponseFrame:
    """What a Response object says about its request, whatever its status."""

    rid: str
    req: ResponsesRequest
    created_at: int = field(default_factory=lambda: int(time.time()))
    error: dict[str, Any] | None = None  # a failed response's `error` (`response_error`)

    def body(self, status: str, output: list[dict[str, Any]],
             usage: UsageInfo | None = None, error: dict[str, Any] | None = None
             ) -> dict[str, Any]:
        r = self.req
        conversation = {"conversation": {"id": r.conversation_id}} if r.conversation_id else {}
        return {
            **conversation,
            "id": self.rid, "object": "response", "created_at": self.created_at,
            "status": status,
            "completed_at": int(time.time()) if status == "completed" else None,  # OpenAI's
            "background": r.background, "error": error,
            "incomplete_details": {"reason": "max_output_tokens"}
            if status == "incomplete" else None,
            # the limit applied: the one sent, or the tenant's cap (gateway/auth_client.py)
            "instructions": r.instructions, "max_output_tokens": r.max_tokens,
            "max_tool_calls": r.max_tool_calls,
            "model": r.model, "output": output, "parallel_tool_calls": r.parallel_tool_calls,
            "previous_response_id": r.previous_response_id, "reasoning": None,
            "store": r.store, "temperature": r.temperature,
            "text": {"format": r.text_format, "verbosity": "medium"},  # the only one served
            "tool_choice": r.tool_choice_json, "tools": r.tools_json,
            "top_logprobs": r.top_logprobs, "top_p": r.top_p,
            "truncation": "auto" if r.truncate else "disabled", "usage": usage_json(usage),
            "user": r.user, "prompt_cache_key": r.prompt_cache_key,
            "prompt_cache_retention": r.prompt_cache_retention,
            "safety_identifier": r.safety_identifier,
            "service_tier": "default",  # what served it: `auto` and `default` are one tier here
            "metadata": r.metadata,
        }

    def output(self, text: str, calls: list[ToolCall], status: str,
               logprobs: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """The output items of a finished answer: its text (when any, or when nothing else
        came) as a message, with its tokens' `logprobs` (chat's shape), then its calls."""
        items = [message_item(new_id("msg"), text, status, logprobs)] \
            if text or not calls else []
        return items + [call_item(new_id("fc"), c, call_status(c)) for c in calls]


@dataclass
class EventStream:
    """The events of one streamed response (see the module doc)."""

    frame: ResponseFrame
    shape: StreamShape
    seq: int = 0
    output: list[dict[str, Any]] = field(default_factory=list)  # finished items
    text: list[str] = field(default_factory=list)  # the answer's text, all messages
    calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    _open: dict[str, Any] | None = None  # the message item being written
    _open_text: list[str] = field(default_factory=list)
    _open_logprobs: list[dict[str, Any]] = field(default_factory=list)
    _call: tuple[dict[str, Any], ToolCall] | None = None  # a call whose arguments come next

    def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        out = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return out

    def start(self) -> list[dict[str, Any]]:
        body = self.frame.body("in_progress", [])
        return [self.event("response.created", response=body),
                self.event("response.in_progress", response=body)]

    def feed(self, chunk: Chunk) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for payload in self.shape.payloads(chunk):
            for choice in payload["choices"]:
                self._choice(choice, out)
        return out

    def _choice(self, choice: dict[str, Any], out: list[dict[str, Any]]) -> None:
        delta, logprobs = choice["delta"], (choice.get("logprobs") or {}).get("content")
        if delta.get("content") or logprobs:  # a token without text (an EOS) has logprobs
            self._text(delta.get("content") or "", out, logprobs)
        for tc in delta.get("tool_calls") or []:
            if "id" in tc:
                self._close_message(out)
                call = ToolCall(tc["id"], tc["function"]["name"], "")
                item = call_item(new_id("fc"), call, "in_progress")
                self._call = (item, call)
                out.append(self.event("response.output_item.added",
                                      output_index=len(self.output), item=item))
            elif self._call is not None:
                self._arguments(tc["function"]["arguments"], out)
        if choice.get("finish_reason") is not None:
            self.finish_reason = choice["finish_reason"]

    def _text(self, text: str, out: list[dict[str, Any]],
              logprobs: list[dict[str, Any]] | None = None) -> None:
        """Text and, when asked for, its tokens' logprobs: chat sends the two in one payload
        when the request has no tools, and Responses refuses logprobs beside tools."""
        if self._open is None:
            self._open = message_item(new_id("msg"), "", "in_progress")
            self._open_text, self._open_logprobs = [], []
            out.append(self.event("response.output_item.added", output_index=len(self.output),
                                  item=self._open))
            out.append(self.event("response.content_part.added", item_id=self._open["id"],
                                  output_index=len(self.output), content_index=0,
                                  part=_text_part("")))
        if not text and not logprobs:
            return
        self._open_text.append(text)
        self._open_logprobs += logprobs or []
        self.text.append(text)
        out.append(self.event("response.output_text.delta", item_id=self._open["id"],
                              output_index=len(self.output), content_index=0, delta=text,
                              logprobs=logprobs or []))

    def _close_message(self, out: list[dict[str, Any]], status: str = "completed") -> None:
        if self._open is None:
            return
        item_id, text, index = self._open["id"], "".join(self._open_text), len(self.output)
        done = message_item(item_id, text, status, self._open_logprobs)
        out.append(self.event("response.output_text.done", item_id=item_id, output_index=index,
                              content_index=0, text=text, logprobs=self._open_logprobs))
        out.append(self.event("response.content_part.done", item_id=item_id,
                              output_index=index, content_index=0, part=done["content"][0]))
        out.append(self.event("response.output_item.done", output_index=index, item=done))
        self.output.append(done)
        self._open = None

    def _arguments(self, arguments: str, out: list[dict[str, Any]]) -> None:
        """A call's arguments come whole (gateway/openai_response.py): the call ends here."""
        assert self._call is not None
        item, call = self._call
        call.arguments = arguments
        index = len(self.output)
        out.append(self.event("response.function_call_arguments.delta", item_id=item["id"],
                              output_index=index, delta=arguments))
        out.append(self.event("response.function_call_arguments.done", item_id=item["id"],
                              output_index=index, arguments=arguments))
        done = {**item, "arguments": arguments, "status": call_status(call)}
        out.append(self.event("response.output_item.done", output_index=index, item=done))
        self.output.append(done)
        self.calls.append(call)
        self._call = None

    def finish(self, usage: UsageInfo | None) -> list[dict[str, Any]]:
        """The closing events; `self.output` is then the whole answer."""
        status = status_of(self.finish_reason)
        out: list[dict[str, Any]] = []
        if self._open is None and not self.output:
            self._text("", out)  # an empty answer is still one (empty) message
        self._close_message(out, status)
        kind = "response.incomplete" if status == "incomplete" else "response.completed"
        out.append(self.event(kind, response=self.frame.body(status, self.output, usage)))
        return out

    def failed(self, code: str | None, message: str,
               param: str | None = None) -> list[dict[str, Any]]:
        """The `error` event (kvmesh's own `code`, the field at fault), then
        `response.failed`, whose Response carries the `response_error` of it."""
        self.frame.error = response_error(code, message)
        body = self.frame.body("failed", self.output, error=self.frame.error)
        return [self.event("error", code=code, message=message, param=param),
                self.event("response.failed", response=body)]
