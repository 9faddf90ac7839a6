"""The `input` of `POST /v1/responses`: its items as chat messages (the prompt) and as the
input items `GET /v1/responses/{id}/input_items` lists.

Contract:
- `input` is a string (one user message) or a non-empty array of items: `message` (`role`
  user, assistant, system or developer; `content` a string or an array of parts),
  `function_call` (an assistant's call, fed back: it joins the assistant turn before it) and
  `function_call_output` (its result, a tool turn: `output` a string or an array of
  `input_text` parts, joined like a message's). Another item type is 400 `input[i].type`.
- A part's type suits its role, as OpenAI's: `input_text` in a user, system or developer
  message; `output_text` or `refusal` in an assistant's. Another of those three is 400
  naming the part (`input[0].content[1]`) with OpenAI's words ("Invalid value: 'input_text'.
  Supported values are: 'output_text' and 'refusal'."); any other part (images, files) is
  400 naming the part, not supported here.
- A message's parts reach the model joined the way chat joins one message's text parts
  (gateway/chat_messages.py `_content`: no separator), so the same text costs the same
  tokens on both APIs. The stored items keep every part as sent (null keys dropped, an
  `output_text` part's `annotations` defaulted to []), so `input_items` lists what was sent.
- An item's `id`, when given, is a non-empty string unique within the request, and its
  `status` one of `in_progress`, `completed`, `incomplete`; both are echoed by `input_items`,
  which pages by id (`after`). An item without them gets a fresh id (`msg_...`, `fc_...`,
  `fco_...`) and status `completed`.
- Whether each call has its output, and each output a call, is checked over the whole
  conversation, history included: gateway/responses_calls.py.
"""

from __future__ import annotations

import uuid
from typing import Any

from gateway.errors import bad_field
from gateway.nested_keys import check_keys, given
from kvmesh.wire import ChatMessage, ToolCall

ROLES = frozenset({"user", "assistant", "system", "developer"})
STATUSES = ("in_progress", "completed", "incomplete")  # an input item's, as OpenAI's
# keys of an input item, by its type (`id` and `status` are echoed by input_items; they do
# not change the prompt)
ITEM_KEYS = {
    "message": frozenset({"type", "role", "content", "id", "status"}),
    "function_call": frozenset({"type", "call_id", "name", "arguments", "id", "status"}),
    "function_call_output": frozenset({"type", "call_id", "output", "id", "status"}),
}
ID_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}
# keys of a message's content part, by its type, and the key holding its text: a fed-back
# answer's `annotations` and `logprobs` describe its text and are not part of the prompt
PART_KEYS = {"input_text": frozenset({"type", "text"}),
             "output_text": frozenset({"type", "text", "annotations", "logprobs"}),
             "refusal": frozenset({"type", "refusal"})}
PART_TEXT = {"input_text": "text", "output_text": "text", "refusal": "refusal"}
# the part types each role may hold (OpenAI's, less images and files)
ROLE_PARTS = {"assistant": ("output_text", "refusal")}
SPEAKER_PARTS = ("input_text",)  # user, system, developer


def parse_input(raw: Any, name: str = "input") -> tuple[list[ChatMessage], list[dict[str, Any]]]:
    """(the input as chat messages, the input items as `input_items` lists them); errors name
    the field `name` (`items` for a conversation's items)."""
    if isinstance(raw, str):
        raw = [{"role": "user", "content": raw}]
    if not isinstance(raw, list) or not raw:
        raise bad_field(name, "required, a string or a non-empty array of input items")
    messages: list[ChatMessage] = []
    items: list[dict[str, Any]] = []
    ids: dict[str, str] = {}  # a given id -> where its item is
    for i, item in enumerate(raw):
        where = f"{name}[{i}]"
        if not isinstance(item, dict):
            raise bad_field(where, "must be an object")
        kind = given(item, "type", "message")
        if kind not in ITEM_KEYS:
            raise bad_field(f"{where}.type", "must be message, function_call or "
                            "function_call_output")
        check_keys(item, ITEM_KEYS[kind], where)
        echo = {"id": _item_id(item, where, ids, kind), "type": kind,
                "status": _item_status(item, where)}
        items.append({**echo, **_item(item, kind, where, messages)})
    return messages, items


def _item(item: dict[str, Any], kind: str, where: str,
          messages: list[ChatMessage]) -> dict[str, Any]:
    """Append what `item` says to `messages`; return its stored fields (besides id, type
    and status)."""
    if kind == "message":
        msg, stored = _message(item, where)
        messages.append(msg)
        return stored
    if kind == "function_call":
        call = ToolCall(_str(item, "call_id", where), _str(item, "name", where),
                        _str(item, "arguments", where))
        last = messages[-1] if messages else None
        if last is not None and last.role == "assistant":  # one turn: its text, its calls
            last.tool_calls = [*(last.tool_calls or []), call]
        else:
            messages.append(ChatMessage("assistant", "", tool_calls=[call]))
        return {"call_id": call.id, "name": call.name, "arguments": call.arguments}
    call_id, output = _str(item, "call_id", where), item.get("output")
    if isinstance(output, list):  # OpenAI's other form: text parts (images, files refused)
        parts = [_output_part(p, f"{where}.output[{j}]") for j, p in enumerate(output)]
        text = "".join(p["text"] for p in parts)
        messages.append(ChatMessage("tool", text, tool_call_id=call_id))
        return {"call_id": call_id, "output": parts}
    if not isinstance(output, str):
        raise bad_field(f"{where}.output", "required, a string or an array of input_text parts")
    messages.append(ChatMessage("tool", output, tool_call_id=call_id))
    return {"call_id": call_id, "output": output}


def _item_id(item: dict[str, Any], where: str, ids: dict[str, str], kind: str) -> str:
    """The item's id: the given one (a non-empty string no other item of the request has),
    else a fresh one."""
    given = item.get("id")
    if given is None:
        return f"{ID_PREFIX[kind]}_{uuid.uuid4().hex}"
    if not isinstance(given, str) or not given:
        raise bad_field(f"{where}.id", "must be a non-empty string")
    if given in ids:
        raise bad_field(f"{where}.id", f"duplicate id {given!r} (also {ids[given]}.id)"
                        "; input_items pages by id, so each must be unique")
    ids[given] = where
    return given


def _item_status(item: dict[str, Any], where: str) -> str:
    status = item.get("status")
    if status is None:
        return "completed"
    if status not in STATUSES:
        raise bad_field(f"{where}.status", f"must be one of {', '.join(STATUSES)}")
    return str(status)


def _message(item: dict[str, Any], where: str) -> tuple[ChatMessage, dict[str, Any]]:
    role = item.get("role")
    if role not in ROLES:
        raise bad_field(f"{where}.role", f"must be one of {sorted(ROLES)}")
    content = item.get("content")
    allowed = ROLE_PARTS.get(role, SPEAKER_PARTS)
    if isinstance(content, str):  # one part of the role's own type
        parts = [_stored_part({"type": allowed[0], "text": content})]
    elif isinstance(content, list):
        parts = [_part(p, allowed, f"{where}.content[{j}]") for j, p in enumerate(content)]
    else:
        raise bad_field(f"{where}.content", "must be a string or an array of text parts")
    # joined as chat joins a message's text parts (gateway/chat_messages.py `_content`)
    text = "".join(p[PART_TEXT[p["type"]]] for p in parts)
    return ChatMessage(role, text), {"role": role, "content": parts}


def _part(part: Any, allowed: tuple[str, ...], where: str) -> dict[str, Any]:
    """A content part checked against its role's `allowed` types, as it is stored."""
    if not isinstance(part, dict) or part.get("type") not in PART_KEYS:
        raise bad_field(where, "only input_text, output_text and refusal parts are supported")
    kind = part["type"]
    if kind not in allowed:
        supported = " and ".join(f"'{t}'" for t in allowed)
        raise bad_field(where, f"Invalid value: '{kind}'. Supported values are: {supported}.")
    check_keys(part, PART_KEYS[kind], where)
    _str(part, PART_TEXT[kind], where)
    return _stored_part(part)


def _output_part(part: Any, where: str) -> dict[str, Any]:
    """A part of a call's output: `input_text` only here (OpenAI's images and files are not
    supported)."""
    if not isinstance(part, dict) or part.get("type") != "input_text":
        raise bad_field(where, "only input_text parts are supported in a function call's output")
    return _part(part, SPEAKER_PARTS, where)


def _stored_part(part: dict[str, Any]) -> dict[str, Any]:
    """A part as input_items lists it: as sent, less null keys; an `output_text` part has
    `annotations` (openai-python's `ResponseOutputText` requires them)."""
    stored = {k: v for k, v in part.items() if v is not None}
    if stored["type"] == "output_text":
        stored.setdefault("annotations", [])
    return stored


def _str(item: dict[str, Any], name: str, where: str) -> str:
    value = item.get(name)
    if not isinstance(value, str):
        raise bad_field(f"{where}.{name}", "required, a string")
    return value
