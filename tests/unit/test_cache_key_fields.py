"""The result-cache key derives from every request field that can change an answer: for each
field of the registry (gateway/api_fields.py), two requests that differ only in it share a key
exactly when the field is one that cannot change the answer."""

from __future__ import annotations

from typing import Any

import pytest

from cache.key import cache_key
from gateway.api_fields import CHAT_FIELDS, COMPLETION_FIELDS, REFUSED
from gateway.openai_request import parse_chat, parse_completion

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}}
TOOL = {"type": "function", "function": {"name": "f", "parameters": SCHEMA}}
# Fields that only change how or to whom an answer is delivered, or where it is scheduled.
NEUTRAL = {"stream", "stream_options", "user", "metadata", "safety_identifier",
           "prompt_cache_key", "priority", "store", "service_tier", "modalities",
           "prompt_cache_retention", "echo", "best_of", "return_tokens_as_token_ids"}
# For each answer-changing field: (the request without it, the request with it), as additions
# to the base request (a field that needs another is sent with it in both).
T = {"tools": [TOOL]}
OPEN = {"add_generation_prompt": False, "messages": [{"role": "user", "content": "hi"},
                                                     {"role": "assistant", "content": "Hel"}]}
CHANGED: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "model": ({}, {"model": "other"}),
    "messages": ({}, {"messages": [{"role": "user", "content": "bye"}]}),
    "prompt": ({}, {"prompt": "bye"}),
    "temperature": ({}, {"temperature": 0.5}), "top_p": ({}, {"top_p": 0.5}),
    "n": ({}, {"n": 2}), "seed": ({}, {"seed": 7}), "stop": ({}, {"stop": ["x"]}),
    "max_tokens": ({}, {"max_tokens": 9}),
    "max_completion_tokens": ({}, {"max_completion_tokens": 9}),
    "logit_bias": ({}, {"logit_bias": {"42": 5}}), "top_k": ({}, {"top_k": 5}),
    "min_p": ({}, {"min_p": 0.1}), "min_tokens": ({}, {"min_tokens": 2}),
    "skip_special_tokens": ({}, {"skip_special_tokens": False}),
    "allowed_token_ids": ({}, {"allowed_token_ids": [5, 6]}),
    "include_stop_str_in_output": ({"stop": ["x"]},
                                   {"stop": ["x"], "include_stop_str_in_output": True}),
    "frequency_penalty": ({}, {"frequency_penalty": 0.5}),
    "presence_penalty": ({}, {"presence_penalty": -0.5}),
    "repetition_penalty": ({}, {"repetition_penalty": 1.2}),
    "ignore_eos": ({}, {"ignore_eos": True}), "stop_token_ids": ({}, {"stop_token_ids": [3]}),
    "logprobs": ({}, {"logprobs": 2}),  # completions; chat's is below
    "top_logprobs": ({"logprobs": True}, {"logprobs": True, "top_logprobs": 2}),
    "response_format": ({}, {"response_format": {"type": "json_object"}}),
    "tools": ({}, T), "tool_choice": ({**T, "tool_choice": "auto"},
                                      {**T, "tool_choice": "required"}),
    "parallel_tool_calls": ({**T, "tool_choice": "required"},
                            {**T, "tool_choice": "required", "parallel_tool_calls": False}),
    "guided_json": ({}, {"guided_json": SCHEMA}), "guided_regex": ({}, {"guided_regex": "a+"}),
    "guided_choice": ({}, {"guided_choice": ["a", "b"]}),
    "guided_grammar": ({}, {"guided_grammar": 'start: "a"'}),
    "structured_outputs": ({}, {"structured_outputs": {"regex": "a+"}}),
    "add_generation_prompt": ({}, {"add_generation_prompt": False}),
    "continue_final_message": (OPEN, {**OPEN, "continue_final_message": True}),
    "chat_template_kwargs": ({}, {"chat_template_kwargs": {"enable_thinking": False}}),
    "truncate_prompt_tokens": ({}, {"truncate_prompt_tokens": 5}),
}
CHAT_LOGPROBS = ({}, {"logprobs": True})
NEUTRAL_VALUES: dict[str, Any] = {
    "stream": True, "user": "u", "metadata": {"k": "v"},
    "safety_identifier": "s", "prompt_cache_key": "p", "priority": 3, "store": False,
    "service_tier": "default", "modalities": ["text"], "prompt_cache_retention": "in_memory",
    "echo": False, "best_of": 1, "return_tokens_as_token_ids": True}
BASES = {"chat": (parse_chat, CHAT_FIELDS, {"model": "m", "temperature": 0,
                                            "messages": [{"role": "user", "content": "hi"}]}),
         "completion": (parse_completion, COMPLETION_FIELDS,
                        {"model": "m", "temperature": 0, "prompt": "hi"})}


def _key(parse: Any, body: dict[str, Any]) -> str:
    return cache_key(parse(body), "tenant", "rev")


@pytest.mark.parametrize("kind", sorted(BASES))
def test_every_field_is_classified(kind: str) -> None:
    _, fields, _ = BASES[kind]
    open_fields = {f.name for f in fields if f.status != REFUSED}
    assert open_fields <= set(CHANGED) | NEUTRAL, open_fields - set(CHANGED) - NEUTRAL


@pytest.mark.parametrize("kind", sorted(BASES))
def test_requests_differing_in_an_answer_changing_field_do_not_share_a_key(kind: str) -> None:
    parse, fields, base = BASES[kind]
    for f in fields:
        if f.name not in CHANGED or f.status == REFUSED:
            continue
        without, with_it = CHAT_LOGPROBS if (kind, f.name) == ("chat", "logprobs") \
            else CHANGED[f.name]
        assert _key(parse, {**base, **without}) != _key(parse, {**base, **with_it}), f.name


@pytest.mark.parametrize("kind", sorted(BASES))
def test_answer_neutral_fields_share_the_key(kind: str) -> None:
    parse, fields, base = BASES[kind]
    for f in fields:
        if f.name in NEUTRAL and f.status != REFUSED:
            extra = {f.name: NEUTRAL_VALUES.get(f.name)}
            if f.name == "stream_options":
                extra = {"stream": True, "stream_options": {"include_usage": True}}
            assert _key(parse, {**base, **extra}) == _key(parse, base), f.name
