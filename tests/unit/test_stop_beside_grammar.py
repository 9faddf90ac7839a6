"""`stop` and `stop_token_ids` are refused beside a grammar or tools that may be called
(gateway/openai_request.py `_check_stops`): a stop string inside the JSON (`stop: [","]`)
ended `{"name":"Alejandro"` there as a whole answer, and a call's arguments as `""` under
finish_reason `tool_calls`, neither of which a client can parse."""

from __future__ import annotations

import pytest

from gateway.errors import ApiError
from gateway.openai_request import parse_chat, parse_completion

HI = [{"role": "user", "content": "hi"}]
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}}, "required": ["city"]}}}
GRAMMARS = [
    {"response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": SCHEMA}}},
    {"response_format": {"type": "json_object"}},
    {"guided_json": SCHEMA}, {"guided_regex": "[a-z]+"}, {"guided_choice": ["a", "b"]},
    {"guided_grammar": 'start: "a"'}, {"structured_outputs": {"json": SCHEMA}},
    {"structured_outputs": {"json_object": True}}]
TOOLS = [{"tools": [WEATHER]}, {"tools": [WEATHER], "tool_choice": "auto"},
         {"tools": [WEATHER], "tool_choice": "required"},
         {"tools": [WEATHER], "tool_choice": {"type": "function",
                                               "function": {"name": "get_weather"}}}]
STOPS = [{"stop": [","]}, {"stop": "}"}, {"stop_token_ids": [3]}]


def _refused(parse, body: dict) -> ApiError:
    with pytest.raises(ApiError) as err:
        parse(body)
    return err.value


@pytest.mark.parametrize("stop", STOPS)
@pytest.mark.parametrize("extra", GRAMMARS + TOOLS)
def test_a_stop_beside_a_grammar_or_tools_is_a_400_naming_it(extra, stop) -> None:
    err = _refused(parse_chat, {"model": "m", "messages": HI, **extra, **stop})
    assert (err.status, err.code, err.param) == (400, "invalid_value", next(iter(stop)))
    assert "cannot be combined with structured output or tools" in err.message


@pytest.mark.parametrize("stop", STOPS)
@pytest.mark.parametrize("extra", GRAMMARS)
def test_a_stop_beside_a_completions_grammar_is_a_400_naming_it(extra, stop) -> None:
    err = _refused(parse_completion, {"model": "m", "prompt": "p", **extra, **stop})
    assert (err.status, err.param) == (400, next(iter(stop)))


@pytest.mark.parametrize("stop", [{"stop": []}, {"stop": None}, {"stop_token_ids": []},
                                  {"stop_token_ids": None}])
@pytest.mark.parametrize("extra", GRAMMARS[:1] + TOOLS[2:3])
def test_no_stop_is_fine_beside_a_grammar(extra, stop) -> None:
    assert parse_chat({"model": "m", "messages": HI, **extra, **stop}).grammar_kind


def test_stops_stay_for_free_answers_and_tools_that_are_not_called() -> None:
    assert parse_chat({"model": "m", "messages": HI, "stop": [","]}).stop == [","]
    req = parse_chat({"model": "m", "messages": HI, "tools": [WEATHER], "tool_choice": "none",
                      "stop": [","], "stop_token_ids": [3]})
    assert (req.stop, req.stop_token_ids) == ([","], [3])
    assert parse_completion({"model": "m", "prompt": "p", "stop": ","}).stop == [","]
