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
implement (every other `include` value, `reasoning`, hosted tools, ...;
`unsupported_parameter`) unless null or their no-op value; a limited field's other values
(`service_tier: "flex"`) are `unsupported_value`, as chat's. `background: true` needs `store`
(400 `background` without it). `truncation` is
`disabled` (a prompt over the context is 400) or `auto` (the router drops the oldest turns
until it fits, router/truncation.py; the stored conversation keeps them). Logprobs beside
`tools` are refused (`include`): a call's tokens have no place in a Response, and which
logprobs belong to the text around calls is not tracked. A `REFUSED` field of the wrong JSON
type is `invalid_type` (`prompt: false` is not null). A `json_schema` `text.format`
needs its `name` (400 `missing_required_parameter`, as OpenAI). `parallel_tool_calls` must be
a boolean, tools or not (chat takes it only beside tools; without them it changes nothing
but is still echoed as sent). `tools: []` is no tools (agent SDKs send it), and with no
tools a `tool_choice` of `auto` or `none` changes nothing. A function tool without `strict`
is strict (OpenAI's Responses default; chat's is loose); `strict: false` opts out.
`conversation` (`"conv_..."` or `{"id"}`) is an id here, read and appended to by
gateway/responses_conversation.py; beside `previous_response_id` it is 400 naming it.
`input` (its items, their ids, statuses and parts) is gateway/responses_input.py's; its
calls and their outputs must pair up, history included (gateway/responses_calls.py).

What a Response echoes of the request is kept here too: `tool_choice` (`auto` unless sent,
tools or not, as OpenAI), `prompt_cache_key`, `prompt_cache_retention`, `safety_identifier`,
`max_tool_calls` (a cap on built-in tools' calls: none here, so any positive one holds),
`text` (`verbosity` `medium`, the only one served), each tool's `strict` as applied.
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
from gateway.nested_keys import check_keys, given
from gateway.openai_request import ParsedRequest, parse_chat
from gateway.responses_calls import check_calls_answered
from gateway.responses_input import parse_input
from kvmesh.wire import ChatMessage

SUPPORTED = frozenset({
    "model", "input", "instructions", "previous_response_id", "store", "stream",
    "stream_options", "max_output_tokens", "temperature", "top_p", "metadata", "user", "text",
    "tools", "tool_choice", "parallel_tool_calls", "prompt_cache_key", "safety_identifier",
    "include", "top_logprobs", "truncation", "background", "max_tool_calls", "conversation",
})
LOGPROBS = "message.output_text.logprobs"  # the one `include` value implemented
# OpenAI fields we do not implement: refused unless null or the value that changes nothing
# here; name -> (its JSON types, those values). The type is checked first, so a no-op value
# of another type (`service_tier: ["auto"]`) is `invalid_type`.
REFUSED: dict[str, tuple[tuple[str, ...], tuple[Any, ...]]] = {
    "prompt": (("object",), ()), "reasoning": (("object",), ()),
    "service_tier": (("string",), ("auto", "default")),
    "prompt_cache_retention": (("string",), ("in_memory",)),  # the workers' KV pools
    # OpenAI's own services: programs, completion windows, context compaction, images,
    # moderation, explicit cache breakpoints
    "access_programs": (("object",), ()), "background_options": (("object",), ()),
    "context_management": (("array",), ()), "image": (("object",), ()),
    "moderation": (("object",), ()), "prompt_cache_options": (("object",), ()),
}
TEXT_KEYS = frozenset({"format", "verbosity"})
TOOL_KEYS = frozenset({"type", "name", "description", "parameters", "strict"})
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
    background: bool = False  # answered in_progress, generated on (responses_background.py)
    previous_response_id: str | None = None
    conversation_id: str | None = None  # its items are the history; the turn is appended
    # the conversation's items as read (dicts) and as chat turns: stored with the response as
    # its history, so `previous_response_id` naming it continues the whole conversation
    conversation_items: list[dict[str, Any]] = field(default_factory=list)
    conversation_turns: list[ChatMessage] = field(default_factory=list)
    instructions: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    turn: list[ChatMessage] = field(default_factory=list)  # this request's input as messages
    input_items: list[dict[str, Any]] = field(default_factory=list)  # as input_items lists them
    text_format: dict[str, Any] = field(default_factory=lambda: {"type": "text"})
    tools_json: list[dict[str, Any]] = field(default_factory=list)  # echoed in the Response
    tool_choice_json: Any = "auto"
    user: str | None = None
    prompt_cache_key: str | None = None  # echoed (the chat parse checked its type)
    prompt_cache_retention: str | None = None  # echoed: `in_memory` or null (`REFUSED`)
    safety_identifier: str | None = None  # echoed
    max_tool_calls: int | None = None  # echoed; it caps built-in tools' calls, none here
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
    turn, items = parse_input(body.get("input"))
    # typed here, tools or not: the chat request carries it only beside tools
    parallel = _bool(body, "parallel_tool_calls", True)
    instructions = _opt_str(body, "instructions")
    chat = _chat_body(body, turn, instructions)
    try:
        base = parse_chat(chat)
    except ApiError as err:
        raise renamed(err) from None
    req = ResponsesRequest(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)})
    req.kind = "responses"
    req.store = _bool(body, "store", True)
    req.background = _bool(body, "background", False)
    if req.background and not req.store:
        raise bad_field("background", "a background response is polled from the store: "
                        "it needs store: true")
    req.previous_response_id = _opt_str(body, "previous_response_id")
    if req.previous_response_id is not None \
            and not _RESPONSE_ID.fullmatch(req.previous_response_id):
        raise bad_field("previous_response_id", "not a response id (resp_...)")
    req.conversation_id = _conversation(body.get("conversation"))
    if req.conversation_id is not None and req.previous_response_id is not None:
        raise bad_field("conversation", "cannot be used together with previous_response_id")
    req.instructions, req.turn, req.input_items = instructions, turn, items
    req.metadata = dict(body.get("metadata") or {})  # checked by the chat parse
    req.user = body.get("user")
    req.prompt_cache_retention = body.get("prompt_cache_retention")
    req.prompt_cache_key, req.safety_identifier = (body.get("prompt_cache_key"),
                                                   body.get("safety_identifier"))
    req.top_logprobs = body.get("top_logprobs")
    req.max_tool_calls = _max_tool_calls(body.get("max_tool_calls"))
    req.truncate = _truncation(body.get("truncation"))
    if base.max_tokens_param:  # the tenant's cap names the field the caller sent
        req.max_tokens_param = "max_output_tokens"
    if "response_format" in chat:
        req.text_format = body["text"]["format"]
    req.tools_json = [{"description": None, "parameters": None, **t,
                       "strict": _strict(t.get("strict"))} for t in body.get("tools") or []]
    req.tool_choice_json = body.get("tool_choice") or "auto"  # OpenAI's default, tools or not
    req.parallel_tool_calls = parallel  # echoed as sent; without tools it changes nothing
    opts = body.get("stream_options") or {}  # its keys and types were checked as chat's
    if opts.get("include_obfuscation"):
        raise bad_field("stream_options.include_obfuscation",
                        "obfuscation is not supported; send false or leave it out")
    if opts.get("include_usage") is not None:
        raise bad_field("stream_options.include_usage", "not a Responses option; the usage "
                        "is always in response.completed")
    req.with_history([])
    if req.previous_response_id is None and req.conversation_id is None:  # a continuation's
        check_calls_answered(req.messages)  # calls pair with its history's (`load_context`)
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
        # a limited field (some values accepted) refuses the others as chat does
        raise ApiError(400, f"{name}: {why}", param=name,
                       code="unsupported_value" if no_ops else "unsupported_parameter")


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
    tools = body.get("tools")
    if tools is not None and tools != []:  # chat takes parallel_tool_calls only beside tools
        chat["tools"] = _tools(tools)
        chat["parallel_tool_calls"] = body.get("parallel_tool_calls")
    choice = body.get("tool_choice")
    # No tools (absent, or `[]` as agent SDKs send): `auto` or `none` then changes nothing,
    # as leaving it out would (its echo is `auto` either way)
    if choice is not None and not (not tools and choice in ("auto", "none")):
        chat["tool_choice"] = _tool_choice(choice)
    return {k: v for k, v in chat.items() if v is not None}


def _conversation(value: Any) -> str | None:
    """The conversation's id: `"conv_..."` or `{"id": "conv_..."}` (an id the tenant does not
    hold is the store's 404, gateway/responses_conversation.py)."""
    if value is None:
        return None
    if isinstance(value, dict):
        check_keys(value, ("id",), "conversation")
        value, where = value.get("id"), "conversation.id"
    elif not isinstance(value, str):
        raise ApiError(400, f"conversation: must be string or object, got {json_type(value)}",
                       param="conversation", code="invalid_type")
    else:
        where = "conversation"
    if not isinstance(value, str) or not value:
        raise bad_field(where, "required, a conversation id (conv_...)")
    return value


def _max_tool_calls(value: Any) -> int | None:
    """OpenAI's cap on calls to built-in tools, which this server has none of (function
    tools are not counted): any positive integer is honoured as it is, and echoed."""
    if value is None:
        return None
    if type(value) is not int:
        raise ApiError(400, f"max_tool_calls: must be integer, got {json_type(value)}",
                       param="max_tool_calls", code="invalid_type")
    if value < 1:
        raise bad_field("max_tool_calls", "must be at least 1")
    return value


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
        if not isinstance(value, str):
            raise ApiError(400, f"include[{i}]: must be string, got {json_type(value)}",
                           param=f"include[{i}]", code="invalid_type")
        if value != LOGPROBS:
            raise ApiError(400, f"include[{i}]: {json.dumps(value)} is not supported by this "
                           f"server; only {json.dumps(LOGPROBS)} is", param=f"include[{i}]",
                           code="unsupported_parameter")
    wanted = bool(include)  # null and [] ask for nothing
    if wanted and body.get("tools"):
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
    if not isinstance(text.get("verbosity"), str | None):
        raise ApiError(400, f"text.verbosity: must be string, got {json_type(text['verbosity'])}",
                       param="text.verbosity", code="invalid_type")
    if text.get("verbosity") not in (None, "medium"):
        raise ApiError(400, "text.verbosity: only medium (the default) is supported",
                       param="text.verbosity", code="unsupported_value")
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
    if not isinstance(given(fmt, "description", ""), str):
        raise bad_field("text.format.description", "must be a string")
    if fmt.get("name") is None:  # OpenAI requires it, and openai-python's echo needs it
        raise ApiError(400, "text.format.name: missing required parameter",
                       param="text.format.name", code="missing_required_parameter")
    spec = {k: fmt[k] for k in ("name", "schema", "strict") if fmt.get(k) is not None}
    # its type and pattern are checked as chat's (renamed back to text.format.name)
    return {"type": "json_schema", "json_schema": spec}


def _tools(raw: Any) -> Any:
    if not isinstance(raw, list):
        return raw  # the chat validator says why
    out = []
    for i, t in enumerate(raw):
        if not isinstance(t, dict) or t.get("type") != "function":
            raise bad_field(f"tools[{i}].type", "only function tools are supported")
        check_keys(t, TOOL_KEYS, f"tools[{i}]")
        fn = {k: t[k] for k in ("name", "description", "parameters") if k in t}
        fn["strict"] = _strict(t.get("strict"))
        out.append({"type": "function", "function": fn})
    return out


def _strict(value: Any) -> Any:
    """A function tool's `strict`: absent or null is strict on Responses (OpenAI: "Responses
    requests will normalize your schema into strict mode", where chat stays loose); `false`
    opts out. A value of another type goes on for the chat validator to refuse."""
    return True if value is None else value


def _tool_choice(raw: Any) -> Any:
    if isinstance(raw, dict):
        if raw.get("type") != "function":
            raise bad_field("tool_choice.type", "only none, auto, required or a function")
        check_keys(raw, ("type", "name"), "tool_choice")
        return {"type": "function", "function": {"name": raw.get("name")}}
    return raw


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

