"""`POST /v1/responses` bodies validated into a `ResponsesRequest`: a chat request underneath.

The Responses fields map onto the chat path, which validates them with its own rules
(gateway/openai_request.py): `input` and `instructions` become messages, `max_output_tokens` is
`max_completion_tokens`, `text.format` is `response_format`, function `tools` and `tool_choice`
are the chat ones, `include: ["message.output_text.logprobs"]` with `top_logprobs` is chat's
`logprobs: true` with its `top_logprobs`; `user`, `prompt_cache_key`, `safety_identifier`,
`metadata` and `stream_options` go to the chat request under their own names, so its rules
apply (gateway/request_extras.py: `prompt_cache_key` wins over `user` as the session-affinity
hint, the labels go on the trace).
A chat error is renamed to the Responses field it came from (`text.format.schema`,
`tools[1].parameters`), so every 400 names a field of the request the caller sent.

Refused with 400 naming the field: every field not in `SUPPORTED` or `REFUSED` (code
`unknown_parameter`; OpenAI refuses unknown fields too), every key of an object below that it
does not define (`text.foo`, `input[0].foo`, `input[0].content[1].foo`, `tools[0].foo`;
`unknown_parameter`, gateway/nested_keys.py), and among OpenAI's fields those we do not
implement (`background: true`, `conversation`, every other `include` value, `reasoning`, hosted
tools, ...; `unsupported_parameter`) unless null or their no-op value. `truncation` is
`disabled` (a prompt over the context is 400) or `auto` (the router drops the oldest turns
until it fits, router/truncation.py; the stored conversation keeps them). Logprobs beside
`tools` are refused (`include`): a call's tokens have no place in a Response, and which
logprobs belong to the text around calls is not tracked. A `REFUSED` field of the wrong JSON
type is `invalid_type` (`background: 0` is not false).
`input` is a string or a list of items: messages (`role` user, assistant, system or
developer; `content` a string or `input_text`/`output_text` parts), `function_call` items
(an assistant's call, fed back) and `function_call_output` items (its result).
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from gateway.api_fields import json_type
from gateway.errors import ApiError, bad_field
from gateway.json_body import json_object
from gateway.nested_keys import check_keys
from gateway.openai_request import ParsedRequest, parse_chat
from kvmesh.wire import ChatMessage, ToolCall

SUPPORTED = frozenset({
    "model", "input", "instructions", "previous_response_id", "store", "stream",
    "stream_options", "max_output_tokens", "temperature", "top_p", "metadata", "user", "text",
    "tools", "tool_choice", "parallel_tool_calls", "prompt_cache_key", "safety_identifier",
    "include", "top_logprobs", "truncation",
})
LOGPROBS = "message.output_text.logprobs"  # the one `include` value implemented
# OpenAI fields we do not implement: refused unless null or the value that changes nothing
# here; name -> (its JSON types, those values). The type is checked first: 0 == False in
# Python, so `background: 0` would otherwise pass as false.
REFUSED: dict[str, tuple[tuple[str, ...], tuple[Any, ...]]] = {
    "background": (("boolean",), (False,)), "conversation": (("string", "object"), ()),
    "max_tool_calls": (("integer",), ()),
    "prompt": (("object",), ()), "reasoning": (("object",), ()),
    "service_tier": (("string",), ("auto", "default")),
    "prompt_cache_retention": (("string",), ()),
}
ROLES = frozenset({"user", "assistant", "system", "developer"})
TEXT_KEYS = frozenset({"format", "verbosity"})
TOOL_KEYS = frozenset({"type", "name", "description", "parameters", "strict"})
# keys of an input item, by its type (`id` and `status` are echoes: they change nothing)
ITEM_KEYS = {
    "message": frozenset({"type", "role", "content", "id", "status"}),
    "function_call": frozenset({"type", "call_id", "name", "arguments", "id", "status"}),
    "function_call_output": frozenset({"type", "call_id", "output", "id", "status"}),
}
# keys of a message's content part, by its type: a fed-back answer's `annotations` and
# `logprobs` describe its text and are not part of the prompt
PART_KEYS = {"input_text": frozenset({"type", "text"}),
             "output_text": frozenset({"type", "text", "annotations", "logprobs"})}
FORMAT_KEYS = {"text": frozenset({"type"}), "json_object": frozenset({"type"}),
               "json_schema": frozenset({"type", "name", "schema", "description", "strict"})}
_RESPONSE_ID = re.compile(r"resp_[0-9a-f]{32}")
_CHAT_PARAMS = [  # chat field -> the Responses field it came from (first match, by prefix)
    (re.compile(r"^max_completion_tokens"), "max_output_tokens"),
    (re.compile(r"^max_tokens$"), "max_output_tokens"),  # the router's context check
    (re.compile(r"^messages$"), "input"),
    (re.compile(r"^response_format\.json_schema\.schema"), "text.format.schema"),
    (re.compile(r"^response_format\.json_schema\.(\w+)"), r"text.format.\1"),
    (re.compile(r"^response_format"), "text.format"),
    (re.compile(r"^tools\[(\d+)\]\.function\."), r"tools[\1]."),
    (re.compile(r"^tools\[(\d+)\]\.function"), r"tools[\1]"),
    (re.compile(r"^tool_choice\.function\.name"), "tool_choice.name"),
]


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


@dataclass
class ResponsesRequest(ParsedRequest):
    """A chat request plus what a Response object echoes and the store keeps. `messages` is
    [instructions] + the conversation so far (filled from the store) + `turn`."""

    store: bool = True
    previous_response_id: str | None = None
    instructions: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    turn: list[ChatMessage] = field(default_factory=list)  # this request's input as messages
    input_items: list[dict[str, Any]] = field(default_factory=list)  # as input_items lists them
    text_format: dict[str, Any] = field(default_factory=lambda: {"type": "text"})
    tools_json: list[dict[str, Any]] = field(default_factory=list)  # echoed in the Response
    tool_choice_json: Any = "auto"
    user: str | None = None
    max_output_tokens: int | None = None
    top_logprobs: int | None = None  # echoed
    store_ttl: int = 0  # the tenant's responses_ttl (0: the store's default)

    def with_history(self, history: list[ChatMessage]) -> None:
        system = [ChatMessage("system", self.instructions)] if self.instructions else []
        self.messages = [*system, *history, *self.turn]


def parse_responses(body: Any) -> ResponsesRequest:
    body = json_object(body)
    for name, value in body.items():
        if name not in SUPPORTED:
            _unsupported(name, value)
    turn, items = _input(body.get("input"))
    instructions = _opt_str(body, "instructions")
    chat = _chat_body(body, turn, instructions)
    try:
        base = parse_chat(chat)
    except ApiError as err:
        raise renamed(err) from None
    req = ResponsesRequest(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)})
    req.kind = "responses"
    req.store = _bool(body, "store", True)
    req.previous_response_id = _opt_str(body, "previous_response_id")
    if req.previous_response_id is not None \
            and not _RESPONSE_ID.fullmatch(req.previous_response_id):
        raise bad_field("previous_response_id", "not a response id (resp_...)")
    req.instructions, req.turn, req.input_items = instructions, turn, items
    req.metadata = dict(body.get("metadata") or {})  # checked by the chat parse
    req.user = body.get("user")
    req.max_output_tokens = req.max_tokens
    req.top_logprobs = body.get("top_logprobs")
    req.truncate = _truncation(body.get("truncation"))
    if base.max_tokens_param:  # the tenant's cap names the field the caller sent
        req.max_tokens_param = "max_output_tokens"
    if "response_format" in chat:
        req.text_format = body["text"]["format"]
    req.tools_json = [{"description": None, "parameters": None, "strict": None, **t}
                      for t in body.get("tools") or []]
    req.tool_choice_json = body.get("tool_choice") or ("auto" if req.tools else "none")
    opts = body.get("stream_options") or {}  # its keys and types were checked as chat's
    if opts.get("include_obfuscation"):
        raise bad_field("stream_options.include_obfuscation",
                        "obfuscation is not supported; send false or leave it out")
    if opts.get("include_usage") is not None:
        raise bad_field("stream_options.include_usage", "not a Responses option; the usage "
                        "is always in response.completed")
    req.with_history([])
    return req


def _unsupported(name: str, value: Any) -> None:
    """Refuse field `name` (not in `SUPPORTED`) unless null or a `REFUSED` field's no-op."""
    if value is None:
        return
    if name not in REFUSED:
        raise ApiError(400, f"{name}: unknown parameter", param=name, code="unknown_parameter")
    types, no_ops = REFUSED[name]
    if json_type(value) not in types:
        raise ApiError(400, f"{name}: must be {' or '.join(types)}, got {json_type(value)}",
                       param=name, code="invalid_type")
    if value not in no_ops:
        why = "not supported by this server"
        if no_ops:
            why += f"; only {' or '.join(json.dumps(v) for v in no_ops)} is accepted"
        raise ApiError(400, f"{name}: {why}", param=name, code="unsupported_parameter")


def _chat_body(body: dict[str, Any], turn: list[ChatMessage],
               instructions: str | None) -> dict[str, Any]:
    """The chat request a Responses body means (its messages are checked already)."""
    chat: dict[str, Any] = {
        "model": body.get("model"),
        "messages": [{"role": "user", "content": ""}],  # the real ones are set after
        "stream": body.get("stream"),
        "stream_options": body.get("stream_options"),
        "max_completion_tokens": body.get("max_output_tokens"),
        "temperature": body.get("temperature"), "top_p": body.get("top_p"),
        **{name: body.get(name)
           for name in ("user", "prompt_cache_key", "safety_identifier", "metadata")},
    }
    if (rf := _response_format(body.get("text"))) is not None:
        chat["response_format"] = rf
    if _logprobs(body):
        chat["logprobs"], chat["top_logprobs"] = True, body.get("top_logprobs")
    if body.get("tools") is not None:  # chat takes parallel_tool_calls only beside tools
        chat["tools"] = _tools(body["tools"])
        chat["parallel_tool_calls"] = body.get("parallel_tool_calls")
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(body["tool_choice"])
    return {k: v for k, v in chat.items() if v is not None}


def _truncation(value: Any) -> bool:
    """Whether `truncation` is `auto`; `disabled` (the default) or null is False."""
    if value is None or value == "disabled":
        return False
    if value == "auto":
        return True
    if not isinstance(value, str):
        raise ApiError(400, f"truncation: must be string, got {json_type(value)}",
                       param="truncation", code="invalid_type")
    raise bad_field("truncation", "must be auto or disabled")


def _logprobs(body: dict[str, Any]) -> bool:
    """Whether `include` asks for the text's logprobs; `top_logprobs` (0-20, checked as
    chat's) only with them, since alone it would change nothing."""
    include, top = body.get("include"), body.get("top_logprobs")
    for name, value, kind in (("include", include, "array"), ("top_logprobs", top, "integer")):
        if value is not None and json_type(value) != kind:
            raise ApiError(400, f"{name}: must be {kind}, got {json_type(value)}",
                           param=name, code="invalid_type")
    for i, value in enumerate(include or []):
        if value != LOGPROBS:
            raise ApiError(400, f"include[{i}]: {json.dumps(value)} is not supported by this "
                           f"server; only {json.dumps(LOGPROBS)} is", param=f"include[{i}]",
                           code="unsupported_parameter")
    wanted = bool(include)  # null and [] ask for nothing
    if wanted and body.get("tools") is not None:
        raise bad_field("include", f"{LOGPROBS} cannot be combined with tools here")
    if not wanted and top not in (None, 0):
        raise bad_field("top_logprobs", f"requires include to name {LOGPROBS}")
    return wanted


def renamed(err: ApiError) -> ApiError:
    if err.param is None:
        return err
    for pattern, repl in _CHAT_PARAMS:
        if pattern.match(err.param):
            param = pattern.sub(repl, err.param, count=1)
            return dataclasses.replace(err, param=param,
                                       message=err.message.replace(err.param, param, 1))
    return err


def _response_format(text: Any) -> dict[str, Any] | None:
    if text is None:
        return None
    if not isinstance(text, dict):
        raise bad_field("text", "must be an object")
    check_keys(text, TEXT_KEYS, "text")
    if text.get("verbosity") not in (None, "medium"):
        raise bad_field("text.verbosity", "only medium (the default) is supported")
    fmt = text.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
        raise bad_field("text.format.type", "must be text, json_object or json_schema")
    check_keys(fmt, FORMAT_KEYS[fmt["type"]], "text.format")
    if fmt["type"] != "json_schema":
        return {"type": fmt["type"]}
    if not isinstance(fmt.get("schema"), dict):
        raise bad_field("text.format.schema", "required, a JSON Schema object")
    if not isinstance(fmt.get("description", ""), str):
        raise bad_field("text.format.description", "must be a string")
    spec = {k: fmt[k] for k in ("name", "schema", "strict") if fmt.get(k) is not None}
    return {"type": "json_schema", "json_schema": spec}


def _tools(raw: Any) -> Any:
    if not isinstance(raw, list):
        return raw  # the chat validator says why
    out = []
    for i, t in enumerate(raw):
        if not isinstance(t, dict) or t.get("type") != "function":
            raise bad_field(f"tools[{i}].type", "only function tools are supported")
        check_keys(t, TOOL_KEYS, f"tools[{i}]")
        fn = {k: t[k] for k in ("name", "description", "parameters", "strict") if k in t}
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(raw: Any) -> Any:
    if isinstance(raw, dict):
        if raw.get("type") != "function":
            raise bad_field("tool_choice.type", "only none, auto, required or a function")
        check_keys(raw, ("type", "name"), "tool_choice")
        return {"type": "function", "function": {"name": raw.get("name")}}
    return raw


def _input(raw: Any) -> tuple[list[ChatMessage], list[dict[str, Any]]]:
    """(the input as chat messages, the input items as `input_items` lists them)."""
    if isinstance(raw, str):
        raw = [{"role": "user", "content": raw}]
    if not isinstance(raw, list) or not raw:
        raise bad_field("input", "required, a string or a non-empty array of input items")
    messages: list[ChatMessage] = []
    items = []
    for i, item in enumerate(raw):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise bad_field(where, "must be an object")
        kind = item.get("type", "message")
        if kind in ITEM_KEYS:
            check_keys(item, ITEM_KEYS[kind], where)
        if kind == "message":
            msg, norm = _message(item, where)
            messages.append(msg)
        elif kind == "function_call":
            call = ToolCall(_str(item, "call_id", where), _str(item, "name", where),
                            _str(item, "arguments", where))
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant":
                last.tool_calls = [*(last.tool_calls or []), call]
            else:
                messages.append(ChatMessage("assistant", "", tool_calls=[call]))
            norm = {"id": item.get("id") or new_id("fc"), "type": kind, "call_id": call.id,
                    "name": call.name, "arguments": call.arguments, "status": "completed"}
        elif kind == "function_call_output":
            call_id, output = _str(item, "call_id", where), _str(item, "output", where)
            messages.append(ChatMessage("tool", output, tool_call_id=call_id))
            norm = {"id": item.get("id") or new_id("fco"), "type": kind, "call_id": call_id,
                    "output": output, "status": "completed"}
        else:
            raise bad_field(f"{where}.type", "must be message, function_call or "
                            "function_call_output")
        items.append(norm)
    return messages, items


def _message(item: dict[str, Any], where: str) -> tuple[ChatMessage, dict[str, Any]]:
    role = item.get("role")
    if role not in ROLES:
        raise bad_field(f"{where}.role", f"must be one of {sorted(ROLES)}")
    content = item.get("content")
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") not in PART_KEYS \
                    or not isinstance(part.get("text"), str):
                raise bad_field(f"{where}.content[{j}]", "only input_text and output_text parts "
                                "with a string text are supported")
            check_keys(part, PART_KEYS[part["type"]], f"{where}.content[{j}]")
            texts.append(part["text"])
        text = "".join(texts)
    else:
        raise bad_field(f"{where}.content", "must be a string or an array of text parts")
    part_type = "output_text" if role == "assistant" else "input_text"
    part: dict[str, Any] = {"type": part_type, "text": text}
    if part_type == "output_text":
        part["annotations"] = []
    norm = {"id": item.get("id") or new_id("msg"), "type": "message", "role": role,
            "content": [part], "status": "completed"}
    return ChatMessage(role, text), norm


def _str(item: dict[str, Any], name: str, where: str) -> str:
    value = item.get(name)
    if not isinstance(value, str):
        raise bad_field(f"{where}.{name}", "required, a string")
    return value


def _opt_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise bad_field(name, "must be a string")
    return value


def _bool(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad_field(name, "must be a boolean")
    return value

