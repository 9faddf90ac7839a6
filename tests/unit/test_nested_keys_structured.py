"""Keys that `response_format`, `tools[i]`, `tools[i].function` and `tool_choice` do not
define are a 400 naming their path (code `unknown_parameter`), never silently dropped: a
`json_object` format with a `schema` would otherwise answer `{}`."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import ApiError
from gateway.openai_request import parse_chat

FN = {"name": "f", "description": "d", "parameters": {"type": "object"}, "strict": True}
SCHEMA = {"name": "x", "description": "d", "schema": {"type": "object"}, "strict": True}


def chat(**body: Any) -> Any:
    return parse_chat({"model": "m", "messages": [{"role": "user", "content": "hi"}], **body})


@pytest.mark.parametrize(("body", "param"), [
    ({"response_format": {"type": "json_object", "schema": {"type": "object"}}},
     "response_format.schema"),
    ({"response_format": {"type": "text", "json_schema": SCHEMA}}, "response_format.json_schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {**SCHEMA, "foo": 1}}},
     "response_format.json_schema.foo"),
    ({"tools": [{"type": "function", "function": FN, "cache_control": {}}]},
     "tools[0].cache_control"),
    ({"tools": [{"type": "function", "function": {**FN, "foo": 1}}]}, "tools[0].function.foo"),
    ({"tools": [{"type": "function", "function": FN}], "tool_choice": {
        "type": "function", "function": {"name": "f", "foo": 1}}}, "tool_choice.function.foo"),
])
def test_unknown_nested_keys_are_400s_naming_their_path(body: dict[str, Any], param: str) -> None:
    with pytest.raises(ApiError) as err:
        chat(**body)
    assert (err.value.status, err.value.param, err.value.code) == (400, param, "unknown_parameter")
    assert err.value.message.startswith(param + ": unknown key")


@pytest.mark.parametrize(("body", "param"), [
    ({"response_format": {"type": "json_schema", "json_schema": {**SCHEMA, "description": 1}}},
     "response_format.json_schema.description"),
    ({"tools": [{"type": "function", "function": {**FN, "strict": "yes"}}]},
     "tools[0].function.strict"),
])
def test_known_nested_keys_of_the_wrong_type_are_400s(body: dict[str, Any], param: str) -> None:
    with pytest.raises(ApiError) as err:
        chat(**body)
    assert (err.value.status, err.value.param) == (400, param)


def test_every_key_openai_defines_is_accepted_and_null_is_absent() -> None:
    req = chat(response_format={"type": "json_schema", "json_schema": SCHEMA},
               tools=[{"type": "function", "function": FN}],
               tool_choice={"type": "function", "function": {"name": "f"}})
    assert req.tool_name == "f"
    assert chat(response_format={"type": "json_object", "schema": None}).grammar_kind


@pytest.mark.parametrize("key", ["name", "description", "strict"])
def test_a_json_schema_key_sent_as_null_is_one_left_out(key: str) -> None:
    spec = {**SCHEMA, key: None}
    left_out = {k: v for k, v in SCHEMA.items() if k != key}
    assert chat(response_format={"type": "json_schema", "json_schema": spec}).grammar == \
        chat(response_format={"type": "json_schema", "json_schema": left_out}).grammar


def test_null_parallel_tool_calls_and_schema_are_the_defaults() -> None:
    """The openai client sends `parallel_tool_calls=None` as null (audit c)."""
    tools = [{"type": "function", "function": FN}]
    assert chat(tools=tools, parallel_tool_calls=None).parallel_tool_calls is True
    spec = {"name": "x", "schema": None}
    assert chat(response_format={"type": "json_schema", "json_schema": spec}).grammar == \
        chat(response_format={"type": "json_schema", "json_schema": {"name": "x"}}).grammar
