"""Responses bodies map onto the chat request they mean, and every refusal names the
Responses field (not the chat field it was checked as)."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.responses import Response

from gateway.errors import ApiError
from gateway.responses_request import parse_responses, renamed
from gateway.responses_shape import ResponseFrame
from kvmesh.wire import ChatMessage, ToolCall

TOOL = {"type": "function", "name": "f",
        "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}}


def test_input_items_become_chat_messages_after_the_instructions() -> None:
    req = parse_responses({"model": "m", "instructions": "Be brief.", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "a"},
                                     {"type": "input_text", "text": "b"}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "42"}]})
    assert req.messages == [
        ChatMessage("system", "Be brief."), ChatMessage("user", "ab"),
        ChatMessage("assistant", "", tool_calls=[ToolCall("c1", "f", "{}")]),
        ChatMessage("tool", "42", tool_call_id="c1")]
    assert [i["type"] for i in req.input_items] == ["message", "function_call",
                                                    "function_call_output"]
    req.with_history([ChatMessage("user", "before")])
    assert [m.content for m in req.messages][:2] == ["Be brief.", "before"]


@pytest.mark.parametrize("tools", [{"tools": []}, {}], ids=["empty", "absent"])
def test_an_empty_tools_list_is_no_tools(tools: dict[str, Any]) -> None:
    """Agent SDKs send `tools: []` (and `include: []`) for an agent without tools; a client
    may send the default `tool_choice` without tools at all."""
    for choice in (None, "auto", "none"):
        req = parse_responses({"model": "m", "input": "hi", **tools, "include": [],
                               **({"tool_choice": choice} if choice else {})})
        assert req.tools is None and req.grammar_kind == ""
    with pytest.raises(ApiError) as err:
        parse_responses({"model": "m", "input": "hi", **tools, "tool_choice": "required"})
    assert err.value.param == "tool_choice"


def test_fields_map_onto_the_chat_request() -> None:
    req = parse_responses({"model": "m", "input": "hi", "max_output_tokens": 7,
                           "temperature": 0, "user": "u1", "tools": [TOOL],
                           "tool_choice": {"type": "function", "name": "f"}, "store": False})
    assert (req.max_tokens, req.temperature, req.session, req.store) == (7, 0.0, "u1", False)
    assert (req.tool_choice, req.tool_name, req.grammar_kind) == ("function", "f", "tool_calls")
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    req = parse_responses({"model": "m", "input": "hi", "text": {"format": {
        "type": "json_schema", "name": "x", "schema": schema}}})
    assert req.grammar_kind == "json_schema" and req.text_format["name"] == "x"


@pytest.mark.parametrize(("extra", "param"), [
    ({"max_output_tokens": 0}, "max_output_tokens"),
    ({"text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "nope"}}}},
     "text.format.schema"),
    ({"tools": [{**TOOL, "name": "bad name"}]}, "tools[0].name"),
    ({"tools": [{**TOOL, "parameters": 3}]}, "tools[0].parameters"),
    ({"tools": [TOOL], "tool_choice": {"type": "function", "name": "g"}}, "tool_choice.name"),
    ({"tools": [{"type": "file_search"}]}, "tools[0].type"),
    ({"include": ["x"]}, "include[0]"),
    ({"include": ["message.output_text.logprobs", "x"]}, "include[1]"),
    ({"include": "message.output_text.logprobs"}, "include"),
    ({"top_logprobs": False}, "top_logprobs"),
    ({"top_logprobs": 1}, "top_logprobs"),
    ({"unknown": 1}, "unknown"),
    ({"metadata": {"k": 1}}, "metadata"),
    ({"input": [{"type": "reasoning"}]}, "input[0].type"),
    ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
    ({"previous_response_id": "chatcmpl-1"}, "previous_response_id"),
    ({"stream": True, "stream_options": {"include_obfuscation": True}},
     "stream_options.include_obfuscation"),
    ({"stream": True, "stream_options": {"foo": True}}, "stream_options.foo"),
    ({"stream_options": {"include_obfuscation": False}}, "stream_options"),
    ({"stream": True, "stream_options": {"include_usage": True}}, "stream_options.include_usage"),
    ({"text": {"foo": 1}}, "text.foo"),
    ({"text": {"format": {"type": "json_object", "name": "x"}}}, "text.format.name"),
    ({"text": {"format": {"type": "json_schema", "schema": {}, "foo": 1}}}, "text.format.foo"),
    ({"text": {"format": {"type": "json_schema", "schema": {}, "description": 1}}},
     "text.format.description"),
    ({"text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format.name"),
    ({"text": {"format": {"type": "json_schema", "name": 3, "schema": {}}}}, "text.format.name"),
    ({"user": 1}, "user"),
    ({"prompt_cache_key": 1}, "prompt_cache_key"),
    ({"metadata": {"k" * 65: "v"}}, "metadata"),
])
def test_refusals_name_the_responses_field(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(ApiError) as err:
        parse_responses({"model": "m", "input": "hi", **extra})
    assert err.value.status == 400 and err.value.param == param
    assert err.value.message.startswith(param)


def test_null_and_no_op_values_of_unsupported_fields_are_accepted() -> None:
    parse_responses({"model": "m", "input": "hi", "reasoning": None, "include": [],
                     "background": False, "truncation": "disabled", "service_tier": "auto"})


def test_logprobs_are_chats_when_include_asks_for_them() -> None:
    req = parse_responses({"model": "m", "input": "hi", "top_logprobs": 4,
                           "include": ["message.output_text.logprobs"]})
    assert (req.logprobs, req.top_logprobs) == (4, 4)
    assert parse_responses({"model": "m", "input": "hi", "top_logprobs": 0}).logprobs is None
    assert parse_responses({"model": "m", "input": "hi",
                            "include": ["message.output_text.logprobs"]}).logprobs == 0


def test_labels_and_hints_are_chats() -> None:
    req = parse_responses({"model": "m", "input": "hi", "user": "u1", "prompt_cache_key": "p1",
                           "safety_identifier": "s1", "metadata": {"run": "1"}})
    assert (req.session, req.user, req.metadata) == ("p1", "u1", {"run": "1"})
    assert req.trace_labels == {"gen_ai.request.user": "u1", "kvmesh.safety_identifier": "s1",
                                "kvmesh.metadata.run": "1"}
    req = parse_responses({"model": "m", "input": "hi", "stream": True,
                           "stream_options": {"include_obfuscation": False},
                           "text": {"format": {"type": "json_schema", "name": "x", "schema": {},
                                               "description": "d", "strict": True}}})
    assert req.text_format["description"] == "d"


def test_errors_after_parsing_name_the_responses_fields() -> None:
    req = parse_responses({"model": "m", "input": "hi", "max_output_tokens": 7})
    assert req.max_tokens_param == "max_output_tokens"  # the tenant cap's error names it
    assert parse_responses({"model": "m", "input": "hi"}).max_tokens_param == ""
    err = renamed(ApiError(400, "the prompt (3 tokens) plus max_tokens (9) exceeds this "
                           "model's context of 8 tokens", param="max_tokens"))
    assert err.param == "max_output_tokens" and "plus max_output_tokens (9)" in err.message
    assert renamed(ApiError(400, "the prompt has 9 tokens", param="messages")).param == "input"


def test_parallel_tool_calls_is_typed_and_echoed_tools_or_not() -> None:
    """Responses clients send `parallel_tool_calls` whether or not they pass tools; chat takes
    it only beside tools (a 400 there), so without tools it changes nothing, but it is still
    a boolean and the Response echoes what was sent."""
    for tools in ({}, {"tools": [TOOL]}):
        req = parse_responses({"model": "m", "input": "hi", "parallel_tool_calls": False,
                               **tools})
        assert req.parallel_tool_calls is False
        assert ResponseFrame("resp_1", req).body("completed", [])["parallel_tool_calls"] is False
        assert parse_responses({"model": "m", "input": "hi", **tools}).parallel_tool_calls
        with pytest.raises(ApiError) as err:
            parse_responses({"model": "m", "input": "hi", "parallel_tool_calls": "yes", **tools})
        assert (err.value.status, err.value.param) == (400, "parallel_tool_calls")


def test_the_response_echoes_what_was_sent_and_openais_defaults() -> None:
    """`prompt_cache_key` and `safety_identifier` as sent; `service_tier` the tier that served
    it (one: `default`); `text.verbosity` `medium`; `tool_choice` `auto` unless sent, tools or
    not. The echo validates as openai-python's `Response`."""
    sent = parse_responses({"model": "m", "input": "hi", "prompt_cache_key": "p1",
                            "safety_identifier": "s1", "service_tier": "auto"})
    body = ResponseFrame("resp_1", sent).body("completed", [])
    assert (body["prompt_cache_key"], body["safety_identifier"]) == ("p1", "s1")
    assert (body["service_tier"], body["tool_choice"]) == ("default", "auto")
    assert body["text"] == {"format": {"type": "text"}, "verbosity": "medium"}
    Response.model_validate(body)
    unsent = ResponseFrame("resp_2", parse_responses({"model": "m", "input": "hi"}))
    body = unsent.body("completed", [])
    assert (body["prompt_cache_key"], body["safety_identifier"]) == (None, None)
    assert (body["service_tier"], body["tool_choice"]) == ("default", "auto")


def test_a_key_sent_as_null_is_one_left_out_in_the_format_and_the_input_items() -> None:
    """A client that sends back a retrieved Response's `text` (its description null), or an
    item with `type: null` (audit c)."""
    fmt = {"type": "json_schema", "name": "x", "schema": {"type": "object"}}
    base = {"model": "m", "input": "hi"}
    assert parse_responses({**base, "text": {"format": {**fmt, "description": None}}}).grammar \
        == parse_responses({**base, "text": {"format": fmt}}).grammar
    typed = parse_responses({"model": "m", "input": [{"role": "user", "content": "hi",
                                                      "type": None}]})
    assert typed.messages == parse_responses({"model": "m", "input": [
        {"role": "user", "content": "hi"}]}).messages


@pytest.mark.parametrize("given,strict", [({}, True), ({"strict": None}, True),
                                          ({"strict": True}, True), ({"strict": False}, False)])
def test_a_function_tool_is_strict_unless_it_says_false(given: dict[str, Any],
                                                        strict: bool) -> None:
    """OpenAI's Responses makes a function without `strict` strict (chat keeps it loose): its
    calls are held to its parameters under `auto` too, and the echo says so."""
    req = parse_responses({"model": "m", "input": "hi", "tools": [{**TOOL, **given}]})
    assert req.tools is not None and req.tools[0].strict is strict
    assert req.tools_json[0]["strict"] is strict
    assert (req.grammar_kind == "tool_calls") is strict  # the free tool-call grammar, or none
