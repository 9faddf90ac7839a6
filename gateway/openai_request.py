"""OpenAI request bodies (chat and completions) validated into a `ParsedRequest`.

Every bad field raises `ApiError(400)` naming the field (`param`) and why. Which fields exist,
their JSON types, and which are refused or limited is gateway/api_fields.py's registry, checked
first (an unknown field is a 400 too: nothing is silently ignored). Extensions: `ignore_eos`,
`top_k`, `stop_token_ids`, `priority`. Structured output and tools (`response_format`,
`guided_*`, `tools`, `tool_choice`, `parallel_tool_calls`) are parsed in
gateway/structured_request.py; `logit_bias`, session hints and trace labels in
gateway/request_extras.py; a completion's prompt or batch of prompts, `echo` and `suffix` in
gateway/completion_prompts.py.

`messages` (`parse_messages`, /tokenize's too): a key its role does not have (`MESSAGE_KEYS`)
is a 400 naming its path (`messages[0].foo`, `messages[1].content[0].cache_control`); content
is required, a string or text parts, except on an assistant turn with `tool_calls` or a
`refusal` (the assistant's text when given); an assistant's `function_call`, `audio` and
non-empty `annotations` are refused. `max_tokens` is checked even where
`max_completion_tokens` wins; `parallel_tool_calls` is a 400 without `tools`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from gateway.api_fields import CHAT_FIELDS, COMPLETION_FIELDS, check_fields
from gateway.completion_prompts import INT_LIMIT, Prompt, parse_echo, parse_prompts
from gateway.errors import ApiError, bad_field
from gateway.nested_keys import check_keys
from gateway.request_extras import parse_extras, session_hint
from gateway.structured_request import parse_grammar, parse_tools, tool_grammar
from kvmesh.wire import ChatMessage, GenerateRequest, SamplingFields, ToolCall, ToolDef, sampling_of

# The keys of each role's message: OpenAI's, and two more. A tool turn's `name` (the function's)
# is sent by some clients and reaches the template; `reasoning_content` is what our own answers
# carry (gateway/reasoning.py), so an echoed answer is accepted; it is not shown to the model,
# as reasoning templates drop past turns' reasoning.
_SPEAKER_KEYS = frozenset({"role", "content", "name"})
MESSAGE_KEYS = {
    "system": _SPEAKER_KEYS, "developer": _SPEAKER_KEYS, "user": _SPEAKER_KEYS,
    "assistant": _SPEAKER_KEYS | {"tool_calls", "refusal", "audio", "function_call",
                                  "annotations", "reasoning_content"},
    "tool": frozenset({"role", "content", "tool_call_id", "name"}),
}
# `index` is what a streamed answer's tool_calls deltas carry: clients fold them into the
# message they send back
_TOOL_CALL_KEYS = ("id", "type", "function", "index")
_FUNCTION_KEYS = ("name", "arguments")
_TEXT_PART_KEYS = ("type", "text")


@dataclass
class ParsedRequest(SamplingFields):
    """A validated request; its sampling fields (`logprobs`: how many top alternatives, None
    for none) are the wire's own, so `to_wire` copies them without naming them."""

    kind: str  # "chat" or "completion"
    model: str
    stream: bool = False
    include_usage: bool = False
    messages: list[ChatMessage] | None = None
    prompt: str | None = None
    prompt_token_ids: list[int] | None = None
    prompts: list[Prompt] | None = None  # a completions batch (2+ prompts); else None
    tenant: str = ""  # set by auth from the caller's key
    session: str = ""  # session-affinity hint: the `user` field (or the x-kvmesh-session header)
    tools: list[ToolDef] | None = None
    tool_choice: str = "none"  # none, auto, required, or "function" (named by `tool_name`)
    tool_name: str | None = None
    parallel_tool_calls: bool = True
    trace_labels: dict[str, str] = field(default_factory=dict)  # span attributes: user, ...
    max_tokens_param: str = ""  # the field the client set max_tokens with ("" for a default)

    @property
    def tool_names(self) -> frozenset[str]:
        """Functions whose calls are parsed out of the answer (empty: none are)."""
        if not self.tools or self.tool_choice == "none":
            return frozenset()
        return frozenset(t.name for t in self.tools)

    def split(self) -> list[ParsedRequest]:
        """One request per prompt of a batch, else [self]."""
        if not self.prompts:
            return [self]
        return [dataclasses.replace(self, prompts=None, prompt=p if isinstance(p, str) else None,
                                    prompt_token_ids=None if isinstance(p, str) else p)
                for p in self.prompts]

    def to_wire(self, request_id: str, reply_to: str, tenant: str = "") -> GenerateRequest:
        return GenerateRequest(
            request_id=request_id, model=self.model, reply_to=reply_to, prompt=self.prompt,
            messages=self.messages, prompt_token_ids=self.prompt_token_ids,
            tenant=tenant or self.tenant, session=self.session, tools=self.tools,
            **sampling_of(self),
        )


def parse_chat(body: Any) -> ParsedRequest:
    body = _object(body)
    check_fields(body, CHAT_FIELDS)
    req = ParsedRequest("chat", _model(body))
    _common(body, req)
    req.messages = parse_messages(body)
    parse_grammar(body, req)
    if body.get("parallel_tool_calls") is not None and body.get("tools") is None:
        raise bad_field("parallel_tool_calls", "only with tools")  # as OpenAI
    req.tools, req.tool_choice, req.tool_name, req.parallel_tool_calls = parse_tools(body)
    if req.tools and (calls := tool_grammar(req.tools, req.tool_choice, req.tool_name,
                                            req.parallel_tool_calls)):
        req.grammar_kind, req.grammar = "tool_calls", calls
    legacy = _opt_int(body, "max_tokens", 1)  # checked even where max_completion_tokens wins
    req.max_tokens = _opt_int(body, "max_completion_tokens", 1)
    if req.max_tokens is None:
        req.max_tokens = legacy
    req.max_tokens_param = _given(body, "max_completion_tokens", "max_tokens")
    if _get(body, "logprobs", bool, False):
        req.logprobs = _opt_int(body, "top_logprobs", 0, 20) or 0
    elif body.get("top_logprobs") is not None:
        raise bad_field("top_logprobs", "requires logprobs to be true")
    return req


def parse_completion(body: Any) -> ParsedRequest:
    body = _object(body)
    check_fields(body, COMPLETION_FIELDS)
    req = ParsedRequest("completion", _model(body))
    _common(body, req)
    parse_prompts(body, req)
    parse_grammar(body, req)
    max_tokens = _opt_int(body, "max_tokens", 0)  # 0: with echo only (parse_echo)
    req.max_tokens = 16 if "max_tokens" not in body else max_tokens  # OpenAI's default
    req.max_tokens_param = _given(body, "max_tokens")
    req.logprobs = _opt_int(body, "logprobs", 0, 20)
    parse_echo(body, req)
    return req


def _given(body: dict[str, Any], *names: str) -> str:
    """The first of `names` set (not null) in `body`, else ""."""
    return next((n for n in names if body.get(n) is not None), "")


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object", code="invalid_json")
    return body


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_field("model", "required, a non-empty string")
    return model


def _common(body: dict[str, Any], req: ParsedRequest) -> None:
    req.stream = _get(body, "stream", bool, False)
    opts = body.get("stream_options")
    if opts is not None:
        if not isinstance(opts, dict):
            raise bad_field("stream_options", "must be an object")
        if not req.stream:
            raise bad_field("stream_options", "only allowed when stream is true")
        req.include_usage = _get(opts, "include_usage", bool, False, "stream_options.include_usage")
    req.temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    req.top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    if req.top_p == 0.0:
        raise bad_field("top_p", "must be greater than 0")
    req.top_k = _get(body, "top_k", int, -1)
    if req.top_k == 0 or req.top_k < -1:
        raise bad_field("top_k", "must be -1 (off) or a positive integer")
    req.seed = _opt_int(body, "seed")
    req.n = _opt_int(body, "n", 1, 128) or 1
    req.stop = _stop(body.get("stop"))
    ids = _get(body, "stop_token_ids", list, [])
    if any(type(t) is not int or not 0 <= t < INT_LIMIT for t in ids):
        raise bad_field("stop_token_ids", "must be a list of non-negative integers")
    req.stop_token_ids = ids
    req.ignore_eos = _get(body, "ignore_eos", bool, False)
    req.priority = _get(body, "priority", int, 0)
    req.session = session_hint(body)
    req.trace_labels = parse_extras(body, req)


def parse_messages(body: dict[str, Any]) -> list[ChatMessage]:
    """`body["messages"]` as chat turns: a 400 naming `messages[i]...` for a key its role does
    not have (`MESSAGE_KEYS`), a missing or non-text content, or an assistant field that
    could not reach the model."""
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise bad_field("messages", "required, a non-empty array of messages")
    return [_message(m, f"messages[{i}]") for i, m in enumerate(raw)]


def _message(m: Any, where: str) -> ChatMessage:
    if not isinstance(m, dict):
        raise bad_field(where, "must be an object")
    role = m.get("role")
    if role not in MESSAGE_KEYS:
        raise bad_field(f"{where}.role", f"must be one of {sorted(MESSAGE_KEYS)}")
    check_keys(m, MESSAGE_KEYS[role], where)  # a null is absent: an echoed `refusal: null`
    msg = ChatMessage(role, "", name=_name(m.get("name"), f"{where}.name"))
    if role == "assistant":
        _assistant(m, msg, where)
        return msg
    msg.content = _content(m.get("content"), f"{where}.content")
    if role == "tool":
        msg.tool_call_id = _get(m, "tool_call_id", str, None, f"{where}.tool_call_id")
        if msg.tool_call_id is None:
            raise bad_field(f"{where}.tool_call_id", "required in a tool message")
    return msg


def _name(name: Any, where: str) -> str | None:
    if name is not None and (not isinstance(name, str) or not name):
        raise bad_field(where, "must be a non-empty string")
    return name


def _assistant(m: dict[str, Any], msg: ChatMessage, where: str) -> None:
    """An assistant turn: its tool calls, and its text: `content`, or the `refusal` it gave
    instead (both set is a 400). Content may be absent only beside tool calls or a refusal."""
    _no_unsupported(m, where)
    _get(m, "reasoning_content", str, None, f"{where}.reasoning_content")  # see MESSAGE_KEYS
    if m.get("tool_calls") is not None:
        msg.tool_calls = _tool_calls(m["tool_calls"], f"{where}.tool_calls")
    refusal = _get(m, "refusal", str, None, f"{where}.refusal")
    content = m.get("content")
    if content is None and refusal is None and not msg.tool_calls:
        raise bad_field(f"{where}.content", "required unless tool_calls or refusal is given")
    msg.content = "" if content is None else _content(content, f"{where}.content")
    if refusal is not None:
        if msg.content:
            raise bad_field(f"{where}.refusal", "give content or refusal, not both")
        msg.content = refusal


def _no_unsupported(m: dict[str, Any], where: str) -> None:
    """Refuse what an assistant turn may carry in OpenAI's API but could not reach the model
    here; the null or empty values an echoed answer carries pass."""
    for key, why in (("function_call", "deprecated by OpenAI: use tool_calls"),
                     ("audio", "no audio here")):
        if m.get(key) is not None:
            raise ApiError(400, f"{where}.{key}: not supported ({why})", param=f"{where}.{key}",
                           code="unsupported_parameter")
    annotations = _get(m, "annotations", list, [], f"{where}.annotations")
    if annotations:
        raise ApiError(400, f"{where}.annotations: only [] is accepted (no annotations are made "
                       "here)", param=f"{where}.annotations", code="unsupported_value")


def _tool_calls(raw: Any, where: str) -> list[ToolCall] | None:
    if not isinstance(raw, list):
        raise bad_field(where, "must be an array")
    return [_tool_call(c, f"{where}[{j}]", j) for j, c in enumerate(raw)] or None


def _tool_call(c: Any, where: str, j: int) -> ToolCall:
    if not isinstance(c, dict):
        raise bad_field(where, 'must be {"id", "type": "function", '
                        '"function": {"name", "arguments": a JSON string}}')
    check_keys(c, _TOOL_CALL_KEYS, where)
    if c.get("type") not in (None, "function"):
        raise bad_field(f"{where}.type", 'must be "function"')
    fn = c.get("function")
    if not isinstance(fn, dict):
        raise bad_field(f"{where}.function", 'required, {"name", "arguments": a JSON string}')
    check_keys(fn, _FUNCTION_KEYS, f"{where}.function")
    if not isinstance(fn.get("name"), str):
        raise bad_field(f"{where}.function.name", "required, a string")
    arguments = _get(fn, "arguments", str, "", f"{where}.function.arguments")
    call_id = _get(c, "id", str, None, f"{where}.id")
    return ToolCall(call_id or f"call_{j}", fn["name"], arguments or "{}")


def _content(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_text_part(part, f"{where}[{j}]") for j, part in enumerate(content))
    raise bad_field(where, "required, a string or an array of text parts")


def _text_part(part: Any, where: str) -> str:
    if not isinstance(part, dict) or part.get("type") != "text":
        raise bad_field(where, "only text parts are supported")
    check_keys(part, _TEXT_PART_KEYS, where)
    if not isinstance(part.get("text"), str):
        raise bad_field(f"{where}.text", "required, a string")
    return part["text"]


def _stop(stop: Any) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or len(stop) > 16 \
            or not all(isinstance(s, str) and s for s in stop):
        raise bad_field("stop", "must be a non-empty string or up to 16 of them")
    return stop


def _get(body: dict[str, Any], name: str, tp: type, default: Any, param: str = "") -> Any:
    value = body.get(name)
    if value is None:
        return default
    ok = isinstance(value, tp) and not (tp is int and isinstance(value, bool))
    if not ok:
        raise bad_field(param or name, f"must be {_type_word(tp)}, got {_json_type(value)}")
    if tp is int and not -INT_LIMIT <= value < INT_LIMIT:  # the wire (msgpack) holds int64
        raise bad_field(param or name, f"must be in [-2^63, 2^63), got {value}")
    return value


def _number(body: dict[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_field(name, f"must be a number, got {_json_type(value)}")
    if not lo <= value <= hi:
        raise bad_field(name, f"must be in [{lo:g}, {hi:g}], got {value}")
    return float(value)


def _opt_int(body: dict[str, Any], name: str, lo: int | None = None,
             hi: int | None = None) -> int | None:
    value = _get(body, name, int, None)
    if value is None:
        return None
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"at least {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise bad_field(name, f"must be {bounds}, got {value}")
    return value


def _type_word(tp: type) -> str:
    return {bool: "a boolean", int: "an integer", str: "a string", list: "an array",
            dict: "an object"}.get(tp, tp.__name__)


def _json_type(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(value), type(value).__name__)
