"""Responses bodies: keys an input item, a content part or a tool does not define are 400s
naming their path; unknown fields are `unknown_parameter`, refused ones
`unsupported_parameter`, and a refused field's no-op value must have its JSON type too
(`prompt: false` is not null)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import ApiError
from gateway.responses_request import parse_responses

TOOL = {"type": "function", "name": "f", "description": "d", "parameters": {"type": "object"},
        "strict": True}


def refusal(**extra: Any) -> ApiError:
    with pytest.raises(ApiError) as err:
        parse_responses({"model": "m", "input": "hi", **extra})
    assert err.value.status == 400
    return err.value


@pytest.mark.parametrize(("extra", "param"), [
    ({"input": [{"role": "user", "content": "x", "foo": 1}]}, "input[0].foo"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}",
                 "foo": 1}]}, "input[0].foo"),
    ({"input": [{"type": "function_call_output", "call_id": "c", "output": "1", "foo": 1}]},
     "input[0].foo"),
    ({"input": [{"role": "user", "content": [
        {"type": "input_text", "text": "a"},
        {"type": "input_text", "text": "b", "cache_control": {"type": "ephemeral"}}]}]},
     "input[0].content[1].cache_control"),
    ({"tools": [{**TOOL, "foo": 1}]}, "tools[0].foo"),
    ({"tools": [TOOL], "tool_choice": {"type": "function", "name": "f", "foo": 1}},
     "tool_choice.foo"),
    ({"text": {"foo": 1}}, "text.foo"),
])
def test_unknown_nested_keys_are_400s_naming_their_path(extra: dict[str, Any],
                                                        param: str) -> None:
    err = refusal(**extra)
    assert (err.param, err.code) == (param, "unknown_parameter")


def test_fed_back_output_items_are_accepted() -> None:
    req = parse_responses({"model": "m", "tools": [TOOL], "input": [
        {"role": "user", "content": "hi"},
        {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "ok", "annotations": [], "logprobs": []}]},
        {"id": "fc_1", "type": "function_call", "status": "completed", "call_id": "c",
         "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": "1", "id": None}]})
    assert [m.role for m in req.turn] == ["user", "assistant", "tool"]  # the call joins "ok"


def test_an_unknown_field_is_unknown_parameter() -> None:
    err = refusal(foo=1)
    assert (err.param, err.code) == ("foo", "unknown_parameter")


@pytest.mark.parametrize("extra", [{"reasoning": {"effort": "low"}},
                                   {"context_management": [{"type": "compaction"}]},
                                   {"moderation": {"input": {"mode": "block"}}}])
def test_a_refused_field_is_unsupported_parameter(extra: dict[str, Any]) -> None:
    err = refusal(**extra)
    assert (err.param, err.code) == (next(iter(extra)), "unsupported_parameter")


@pytest.mark.parametrize("extra,param", [({"text": {"verbosity": 5}}, "text.verbosity"),
                                         ({"include": [5]}, "include[0]"),
                                         ({"service_tier": 5}, "service_tier")])
def test_a_limited_field_of_the_wrong_type_is_invalid_type(extra: dict[str, Any],
                                                           param: str) -> None:
    err = refusal(**extra)
    assert (err.param, err.code) == (param, "invalid_type")


@pytest.mark.parametrize("extra,param", [({"prompt_cache_retention": "24h"}, None),
                                         ({"service_tier": "flex"}, None),
                                         ({"text": {"verbosity": "low"}}, "text.verbosity")])
def test_a_limited_fields_other_values_are_unsupported_value(extra: dict[str, Any],
                                                             param: str | None) -> None:
    """As chat's limited fields (docs/API.md: the rules)."""
    err = refusal(**extra)
    assert (err.param, err.code) == (param or next(iter(extra)), "unsupported_value")


def test_an_include_value_not_implemented_is_unsupported_parameter() -> None:
    err = refusal(include=["message.output_text.logprobs", "reasoning.encrypted_content"])
    assert (err.param, err.code) == ("include[1]", "unsupported_parameter")


@pytest.mark.parametrize("extra", [{"prompt": False}, {"max_tool_calls": False},
                                   {"top_logprobs": False},
                                   {"include": {}}, {"truncation": False}])
def test_a_no_op_value_of_the_wrong_type_is_refused(extra: dict[str, Any]) -> None:
    err = refusal(**extra)
    assert (err.param, err.code) == (next(iter(extra)), "invalid_type")


def test_max_tool_calls_is_a_positive_integer_echoed() -> None:
    req = parse_responses({"model": "m", "input": "hi", "max_tool_calls": 3,
                           "prompt_cache_retention": "in_memory"})
    assert (req.max_tool_calls, req.prompt_cache_retention) == (3, "in_memory")
    err = refusal(max_tool_calls=0)
    assert (err.param, err.code) == ("max_tool_calls", "invalid_value")


def test_no_op_values_of_their_own_type_pass() -> None:
    parse_responses({"model": "m", "input": "hi", "background": False, "top_logprobs": 0,
                     "include": [], "truncation": "disabled", "service_tier": "default"})
