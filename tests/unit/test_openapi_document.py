"""`GET /openapi.json` (gateway/openapi.py) is valid OpenAPI 3.0 (strict tools, code
generators, refuse it otherwise: a list `type` is 3.1's), and it agrees with the validators
on bodies a client sends every day (audit c found both ways wrong)."""

from __future__ import annotations

from typing import Any

import pytest
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import OpenAPIV30SpecValidator

from gateway.openai_request import parse_chat, parse_completion
from gateway.openapi import DOCUMENT
from gateway.responses_request import parse_responses

SCHEMAS = DOCUMENT["components"]["schemas"]
CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


def test_the_document_is_valid_openapi_3_0() -> None:
    assert [e.message for e in OpenAPIV30SpecValidator(DOCUMENT).iter_errors()] == []


def _valid(schema: str, body: dict[str, Any]) -> bool:
    return OAS30Validator({**SCHEMAS[schema], "components": DOCUMENT["components"]}).is_valid(
        body)


@pytest.mark.parametrize("schema, parse, body", [
    ("CompletionRequest", parse_completion, {"prompt": ["one prompt"]}),
    ("CompletionRequest", parse_completion, {"prompt": [[1, 2]]}),
    ("CompletionRequest", parse_completion, {"prompt": "x", "stop": []}),
    ("ChatCompletionRequest", parse_chat, {"guided_json": '{"type": "object"}'}),
    ("ChatCompletionRequest", parse_chat, {"top_k": None, "stop": None, "tool_choice": None,
                                           "service_tier": None, "truncate_prompt_tokens": None}),
    ("ChatCompletionRequest", parse_chat, {"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [CALL], "audio": None,
         "function_call": None, "refusal": None},
        {"role": "tool", "content": "1", "tool_call_id": "c1"}]}),
])
def test_bodies_the_validators_serve_are_valid_by_the_document(schema: str, parse: Any,
                                                               body: dict[str, Any]) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **body} \
        if parse is parse_chat else {"model": "m", **body}
    parse(body)
    assert _valid(schema, body)


@pytest.mark.parametrize("message", [
    {"role": "tool", "content": "1"},  # no tool_call_id
    {"role": "user", "content": "hi", "tool_calls": [CALL]},  # a user's calls
    {"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]},  # a call without id
    {"role": "system"},  # no content
])
def test_messages_the_validators_refuse_are_invalid_by_the_document(message: dict) -> None:
    assert not _valid("ChatCompletionRequest", {"model": "m", "messages": [message]})


@pytest.mark.parametrize("body", [
    {"input": "hi"},
    {"input": [{"role": "user", "content": "hi"}], "instructions": "Be brief.",
     "max_output_tokens": 16, "store": False, "background": False, "reasoning": None,
     "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}},
     "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
     "tool_choice": {"type": "function", "name": "f"}, "truncation": "auto"},
    {"input": "hi", "include": ["message.output_text.logprobs"], "top_logprobs": 2},
])
def test_responses_bodies_served_are_valid_by_the_document(body: dict[str, Any]) -> None:
    body = {"model": "m", **body}
    parse_responses(body)
    assert _valid("ResponsesRequest", body)
    assert not _valid("ResponsesRequest", {**body, "reasoning": {"effort": "low"}})
