"""A plain request field's value, read from a JSON body with its type checked (a 400 naming
the field when it is wrong): what the chat, completion and message parsers share."""

from __future__ import annotations

from typing import Any

from gateway.api_fields import json_type
from gateway.completion_prompts import INT_LIMIT
from gateway.errors import bad_field


def typed(body: dict[str, Any], name: str, tp: type, default: Any, param: str = "") -> Any:
    """`body[name]` checked to be of `tp` (an int also within the wire's int64), or `default`
    when absent or null; a 400 naming `param` (else `name`) otherwise."""
    value = body.get(name)
    if value is None:
        return default
    ok = isinstance(value, tp) and not (tp is int and isinstance(value, bool))
    if not ok:
        raise bad_field(param or name, f"must be {type_word(tp)}, got {json_type(value)}")
    if tp is int and value >= INT_LIMIT:  # the wire (msgpack) holds int64; the body parser
        raise bad_field(param or name, f"must be below 2^63, got {value}")  # took the rest
    return value


def type_word(tp: type) -> str:
    return {bool: "a boolean", int: "an integer", str: "a string", list: "an array",
            dict: "an object"}.get(tp, tp.__name__)


def prompt_tail(body: dict[str, Any]) -> int | None:
    """vLLM's `truncate_prompt_tokens`: how many of the prompt's last tokens to keep, -1 for
    as many as fit (the router sizes it, router/truncation.py), or None to keep them all."""
    keep = typed(body, "truncate_prompt_tokens", int, None)
    if keep is not None and keep != -1 and keep < 1:
        raise bad_field("truncate_prompt_tokens", "must be -1 (as many as fit) or a positive "
                        f"integer, got {keep}")
    return keep
