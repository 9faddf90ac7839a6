"""Chat `messages` validated into `ChatMessage`s (chat completions, /tokenize, and Responses
through the chat request it means).

A key its role does not have (`MESSAGE_KEYS`) is a 400 naming its path (`messages[0].foo`,
`messages[1].content[0].cache_control`); content is required, a string or text parts, except
on an assistant turn with `tool_calls` or a `refusal` (the assistant's text when given); an
assistant's `function_call`, `audio` and non-empty `annotations` are refused. `developer` and
`name` reach the template as router/tool_prompt.py says.

A chat request's calls and their results pair up as OpenAI requires (`check_tool_turns`): an
assistant turn with `tool_calls` is followed by one `tool` turn per call, and a `tool` turn
answers a call of the assistant turn before those results. A model shown a call without its
result, or a result of no call, answers a conversation that never happened.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import ApiError, bad_field
from gateway.field_values import typed
from gateway.nested_keys import check_keys
from kvmesh.wire import ChatMessage, ToolCall

# The keys of each role's message: OpenAI's, and three more. A tool turn's `name` (the
# function's) is sent by some clients and reaches the template; `reasoning_content` is what our
# own answers carry (gateway/reasoning.py), so an echoed answer is accepted; it is not shown to
# the model, as reasoning templates drop past turns' reasoning. `parsed` (and a call's
# `parsed_arguments`) are the openai SDK's: `chat.completions.parse()` puts them on the message
# it returns, which clients append to the conversation as it is; they repeat the content and
# arguments, and are ignored.
_SPEAKER_KEYS = frozenset({"role", "content", "name"})
MESSAGE_KEYS = {
    "system": _SPEAKER_KEYS, "developer": _SPEAKER_KEYS, "user": _SPEAKER_KEYS,
    "assistant": _SPEAKER_KEYS | {"tool_calls", "refusal", "audio", "function_call",
                                  "annotations", "reasoning_content", "parsed"},
    "tool": frozenset({"role", "content", "tool_call_id", "name"}),
}
# `index` is what a streamed answer's tool_calls deltas carry: clients fold them into the
# message they send back
_TOOL_CALL_KEYS = ("id", "type", "function", "index")
_FUNCTION_KEYS = ("name", "arguments", "parsed_arguments")
_TEXT_PART_KEYS = ("type", "text")


def parse_messages(body: dict[str, Any]) -> list[ChatMessage]:
    """`body["messages"]` as chat turns: a 400 naming `messages[i]...` for a key its role does
    not have (`MESSAGE_KEYS`), a missing or non-text content, or an assistant field that
    could not reach the model."""
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise bad_field("messages", "required, a non-empty array of messages")
    return [_message(m, f"messages[{i}]") for i, m in enumerate(raw)]


def check_tool_turns(messages: list[ChatMessage]) -> None:
    """400 naming the turn unless every call of an assistant turn is answered by the `tool`
    turns right after it, and every `tool` turn answers one of those calls. Chat's rule, kept
    apart from gateway/responses_calls.py's: a Responses conversation pairs a call with an
    output anywhere after it, and names `input`."""
    open_calls: set[str] = set()  # the calls of the last assistant turn not answered yet
    asked = -1  # the index of that turn; -1: no tool turn may come now
    for i, m in enumerate(messages):
        if m.role == "tool":
            if asked < 0:
                raise bad_field(f"messages[{i}].role", "messages with role 'tool' must be a "
                                "response to a preceding message with 'tool_calls'")
            if m.tool_call_id not in open_calls:
                raise bad_field(f"messages[{i}].tool_call_id", f"{m.tool_call_id!r} answers no "
                                f"unanswered call of messages[{asked}].tool_calls")
            open_calls.discard(m.tool_call_id)
            continue
        _all_answered(open_calls, asked)
        open_calls = {c.id for c in m.tool_calls or []}
        asked = i if open_calls else -1
    _all_answered(open_calls, asked)


def _all_answered(open_calls: set[str], asked: int) -> None:
    if open_calls:
        raise bad_field(f"messages[{asked}].tool_calls", "an assistant message with "
                        "'tool_calls' must be followed by tool messages responding to each "
                        "'tool_call_id'; these have none: " + ", ".join(sorted(open_calls)))


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
        msg.tool_call_id = typed(m, "tool_call_id", str, None, f"{where}.tool_call_id")
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
    typed(m, "reasoning_content", str, None, f"{where}.reasoning_content")  # see MESSAGE_KEYS
    if m.get("tool_calls") is not None:
        msg.tool_calls = _tool_calls(m["tool_calls"], f"{where}.tool_calls")
    refusal = typed(m, "refusal", str, None, f"{where}.refusal")
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
    annotations = typed(m, "annotations", list, [], f"{where}.annotations")
    if annotations:
        raise ApiError(400, f"{where}.annotations: only [] is accepted (no annotations are made "
                       "here)", param=f"{where}.annotations", code="unsupported_value")


def _tool_calls(raw: Any, where: str) -> list[ToolCall] | None:
    """The turn's calls, each with its own id: a `tool` turn answers a call by it."""
    if not isinstance(raw, list):
        raise bad_field(where, "must be an array")
    calls: list[ToolCall] = []
    for j, c in enumerate(raw):
        call = _tool_call(c, f"{where}[{j}]")
        if any(call.id == other.id for other in calls):
            raise bad_field(f"{where}[{j}].id", f"duplicate id {call.id!r} in this turn's calls")
        calls.append(call)
    return calls or None


def _tool_call(c: Any, where: str) -> ToolCall:
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
    arguments = typed(fn, "arguments", str, "", f"{where}.function.arguments")
    call_id = typed(c, "id", str, None, f"{where}.id")
    if not call_id:
        raise bad_field(f"{where}.id", "required, a non-empty string (a tool turn answers it)")
    return ToolCall(call_id, fn["name"], arguments or "{}")


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
