"""Structured output and tool calling through the whole mesh, with the official openai client
and the real SmolLM2: constrained decoding makes even this tiny model's answers valid."""

from __future__ import annotations

import json
from enum import StrEnum

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from tests.integration.conftest import MODEL

ASK = [{"role": "user", "content": "Describe a person."}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 30},
        "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"], "additionalProperties": False}}}
CLOCK = {"type": "function", "function": {
    "name": "get_time", "description": "The time in a timezone.",
    "parameters": {"type": "object", "properties": {"tz": {"type": "string", "maxLength": 30}},
                   "required": ["tz"], "additionalProperties": False}}}
TOOLS = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, CLOCK)}


class Role(StrEnum):
    admin = "admin"
    user = "user"


class Address(BaseModel):
    city: str
    zip_code: str


class Person(BaseModel):
    name: str
    age: int
    role: Role
    address: Address


class Team(BaseModel):
    name: str
    members: list[str]
    active: bool


@pytest.mark.parametrize("model", [Person, Team])
def test_parse_with_a_pydantic_model_returns_the_object(client, model) -> None:
    resp = client.chat.completions.parse(model=MODEL, messages=ASK, response_format=model,
                                         max_tokens=200, temperature=0)
    msg = resp.choices[0].message
    assert resp.choices[0].finish_reason == "stop", msg.content
    assert isinstance(msg.parsed, model)


def test_beta_parse_works_too(client) -> None:
    resp = client.beta.chat.completions.parse(model=MODEL, messages=ASK, response_format=Team,
                                              max_tokens=200, temperature=0.7, seed=1)
    assert isinstance(resp.choices[0].message.parsed, Team)


class Review(BaseModel):  # small answers: 100 of them are sampled on one CPU thread
    verdict: Role
    score: int = Field(ge=0, le=10)


def test_sampled_json_schema_answers_all_validate(client) -> None:
    schema = Review.model_json_schema()
    rf = {"type": "json_schema", "json_schema": {"name": "review", "schema": schema}}
    ask = [{"role": "user", "content": "Review this product."}]
    slow = client.with_options(timeout=300)  # 20 sampled answers per request on one CPU thread
    answers = []
    for seed in range(5):  # 5 x 20 = 100 answers at temperature 1
        resp = slow.chat.completions.create(model=MODEL, messages=ask, response_format=rf,
                                            max_tokens=60, temperature=1.0, n=20, seed=seed)
        answers += [(c.finish_reason, c.message.content) for c in resp.choices]
    assert len(answers) == 100
    for reason, text in answers:
        assert reason == "stop", text
        jsonschema.validate(json.loads(text), schema)


def test_json_object_answers_parse(client) -> None:
    """Any-object mode cannot stop a tiny model from inventing keys until max_tokens; every
    answer the model ends itself parses, and the grammar lets it end."""
    ask = [{"role": "user", "content": 'Answer in JSON like {"name": ..., "age": ...}: '
            "who is the oldest person you know?"}]
    resp = client.chat.completions.create(model=MODEL, messages=ask, max_tokens=150, n=8,
                                          response_format={"type": "json_object"},
                                          temperature=0.7, seed=3)
    ended = [c.message.content for c in resp.choices if c.finish_reason == "stop"]
    assert len(ended) >= 4
    for text in ended:
        assert isinstance(json.loads(text), dict)
    for c in resp.choices:  # a cut answer is still the start of an object
        assert c.message.content.startswith("{")


def test_completions_take_response_format_and_guided_choice(client) -> None:
    resp = client.completions.create(model=MODEL, prompt="Is the sky blue? Answer:",
                                     max_tokens=10, temperature=1.0,
                                     extra_body={"guided_choice": ["yes", "no"]})
    assert resp.choices[0].text in ("yes", "no")
    resp = client.completions.create(model=MODEL, prompt="A year:", max_tokens=10,
                                     extra_body={"guided_regex": "(19|20)[0-9]{2}"})
    assert len(resp.choices[0].text) == 4 and resp.choices[0].text[:2] in ("19", "20")


def test_structured_outputs_holds_the_answer_as_vllms_newer_clients_send_it(client) -> None:
    resp = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Is the sky blue?"}], max_tokens=10,
        temperature=1.0, n=4, extra_body={"structured_outputs": {"choice": ["yes", "no"]}})
    assert {c.message.content for c in resp.choices} <= {"yes", "no"}
    year = {"regex": "(19|20)[0-9]{2}"}
    resp = client.completions.create(model=MODEL, prompt="A year:", max_tokens=10,
                                     extra_body={"structured_outputs": year})
    assert len(resp.choices[0].text) == 4 and resp.choices[0].text[:2] in ("19", "20")


def _check_call(call, name: str | None = None) -> dict:
    assert call.type == "function" and call.id.startswith("call_")
    assert name is None or call.function.name == name
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, TOOLS[call.function.name])
    return args


@pytest.mark.parametrize("seed", range(3))
def test_tool_choice_required_always_yields_a_valid_call(client, seed) -> None:
    resp = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What's the weather in Paris?"}],
        tools=[WEATHER, CLOCK], tool_choice="required", max_tokens=120, temperature=1.0,
        seed=seed)
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    for call in choice.message.tool_calls:
        _check_call(call)


def test_a_named_tool_choice_calls_that_function(client) -> None:
    resp = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What's the weather in Paris?"}],
        tools=[WEATHER, CLOCK], max_tokens=120, temperature=0,
        tool_choice={"type": "function", "function": {"name": "get_time"}})
    calls = resp.choices[0].message.tool_calls
    assert len(calls) == 1
    _check_call(calls[0], "get_time")


def test_a_function_without_parameters_is_called_with_no_arguments(client) -> None:
    """OpenAI: leaving `parameters` out defines a function with an empty parameter list."""
    now = {"type": "function", "function": {"name": "now", "description": "The time now."}}
    resp = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What time is it?"}],
        tools=[now], tool_choice="required", max_tokens=40, temperature=0)
    calls = resp.choices[0].message.tool_calls
    assert resp.choices[0].finish_reason == "tool_calls"
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [("now", {})]


def test_a_streamed_tool_call_reassembles_to_the_non_streamed_one(client) -> None:
    kwargs = dict(model=MODEL, messages=[{"role": "user", "content": "Weather in Rome?"}],
                  tools=[WEATHER], tool_choice="required", max_tokens=120, temperature=0,
                  parallel_tool_calls=False)
    whole = client.chat.completions.create(**kwargs).choices[0].message.tool_calls
    calls: dict[int, dict] = {}
    reason = None
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        if not chunk.choices:
            continue
        reason = chunk.choices[0].finish_reason or reason
        for tc in chunk.choices[0].delta.tool_calls or []:
            slot = calls.setdefault(tc.index, {"name": "", "args": ""})
            if tc.function and tc.function.name:
                slot["name"] = tc.function.name
            if tc.function and tc.function.arguments:
                slot["args"] += tc.function.arguments
    assert reason == "tool_calls"
    assert [(c["name"], json.loads(c["args"])) for c in calls.values()] == [
        (c.function.name, json.loads(c.function.arguments)) for c in whole]


KELVIN = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30},
                                           "unit": {"enum": ["kelvin"]}},
          "required": ["city", "unit"], "additionalProperties": False}


def _few_shot(cities: list[str]) -> list[dict]:
    """Earlier turns that called get_weather with unit celsius: the model copies them, so an
    unconstrained answer calls with celsius (12 of 12 seeds here), which KELVIN refuses."""
    turns: list[dict] = []
    for i, city in enumerate(cities):
        args = json.dumps({"city": city, "unit": "celsius"})
        turns += [{"role": "user", "content": f"Weather in {city}?"},
                  {"role": "assistant", "content": None, "tool_calls": [{
                      "id": f"call_{i}", "type": "function",
                      "function": {"name": "get_weather", "arguments": args}}]},
                  {"role": "tool", "tool_call_id": f"call_{i}", "content": "Sunny."},
                  {"role": "assistant", "content": f"Sunny in {city}."}]
    return [*turns, {"role": "user", "content": "Weather in Paris?"}]


@pytest.mark.parametrize("stream", [False, True])
def test_a_strict_function_holds_calls_under_auto(client, stream) -> None:
    tool = {"type": "function", "function": {**WEATHER["function"], "parameters": KELVIN,
                                             "strict": True}}
    calls = 0
    for seed in range(4):
        kwargs = dict(model=MODEL, messages=_few_shot(["Oslo", "Rome", "Lima"]), tools=[tool],
                      max_tokens=60, temperature=1.0, seed=seed)
        if stream:
            content, made = _streamed_answer(client.chat.completions.create(stream=True,
                                                                            **kwargs))
        else:
            msg = client.chat.completions.create(**kwargs).choices[0].message
            content, made = msg.content or "", [
                (c.function.name, c.function.arguments) for c in msg.tool_calls or []]
        assert "<tool_call" not in content
        for name, arguments in made:
            assert name == "get_weather"
            jsonschema.validate(json.loads(arguments), KELVIN)
        calls += len(made)
    assert calls >= 2  # the few-shot turns make calls likely; each one was held to KELVIN


class Unit(StrEnum):
    kelvin = "kelvin"


class Place(BaseModel):
    city: str = Field(max_length=30)


class GetWeather(BaseModel):
    place: Place
    unit: Unit


def test_pydantic_tools_with_refs_are_held_to_their_models(client) -> None:
    """`pydantic_function_tool` writes an enum and a nested model as `$defs` and `$ref`s
    (strict): calls resolve them and keep to them (the few-shot turns pull towards celsius)."""
    tools = [openai.pydantic_function_tool(GetWeather, name="get_weather"),
             openai.pydantic_function_tool(Person)]
    assert all("$defs" in t["function"]["parameters"] for t in tools)
    for seed in range(2):
        resp = client.chat.completions.parse(
            model=MODEL, messages=_few_shot(["Oslo", "Rome"]), tools=tools,
            tool_choice="required", max_tokens=120, temperature=1.0, seed=seed)
        calls = resp.choices[0].message.tool_calls
        assert calls and resp.choices[0].finish_reason == "tool_calls"
        for call in calls:
            assert isinstance(call.function.parsed_arguments, GetWeather | Person)


def test_a_streamed_call_only_answer_has_null_content_as_the_whole_one(client) -> None:
    kwargs = dict(model=MODEL, messages=_few_shot(["Oslo"]), tools=[WEATHER],
                  tool_choice="required", max_tokens=60, temperature=0)
    whole = client.chat.completions.create(**kwargs).choices[0].message
    with client.chat.completions.stream(**kwargs) as stream:
        folded = stream.get_final_completion().choices[0].message
    assert whole.content is None and folded.content is None
    assert [c.function.arguments for c in folded.tool_calls] == \
        [c.function.arguments for c in whole.tool_calls]
    plain = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=2, stream=True)
    assert next(iter(plain)).choices[0].delta.content == ""  # no tools: OpenAI's first chunk


def test_a_parsed_message_goes_back_into_the_conversation(client) -> None:
    """The SDK's loop: append what `parse()` returned (with its `parsed` and `parsed_arguments`)
    and the tool results, and ask again."""
    messages = _few_shot(["Oslo"])
    tools = [openai.pydantic_function_tool(GetWeather, name="get_weather")]
    first = client.chat.completions.parse(model=MODEL, messages=messages, tools=tools,
                                          tool_choice="required", max_tokens=80, temperature=0)
    msg = first.choices[0].message
    messages.append(msg)
    messages += [{"role": "tool", "tool_call_id": c.id, "content": "Cold."}
                 for c in msg.tool_calls]
    second = client.chat.completions.parse(model=MODEL, messages=messages, tools=tools,
                                           max_tokens=20, temperature=0)
    assert second.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_a_json_format_beside_tools_answers_that_json_or_calls(client) -> None:
    """As agent frameworks send an output type with tools: the answer is either."""
    tool = {"type": "function", "function": {**WEATHER["function"], "parameters": KELVIN,
                                             "strict": True}}
    asked = client.chat.completions.parse(model=MODEL, messages=ASK, tools=[tool],
                                          response_format=Person, max_tokens=200, temperature=0)
    msg = asked.choices[0].message
    assert isinstance(msg.parsed, Person) and not msg.tool_calls
    assert asked.choices[0].finish_reason == "stop"
    called = client.chat.completions.parse(model=MODEL, messages=_few_shot(["Oslo", "Rome"]),
                                           tools=[tool], response_format=Person,
                                           max_tokens=60, temperature=0)
    msg = called.choices[0].message
    assert called.choices[0].finish_reason == "tool_calls" and msg.content is None
    assert [c.function.name for c in msg.tool_calls] == ["get_weather"]
    jsonschema.validate(json.loads(msg.tool_calls[0].function.arguments), KELVIN)


def _streamed_answer(stream) -> tuple[str, list[tuple[str, str]]]:
    content, calls = "", {}
    for chunk in stream:
        for choice in chunk.choices:
            content += choice.delta.content or ""
            for tc in choice.delta.tool_calls or []:
                name, args = calls.get(tc.index, ("", ""))
                calls[tc.index] = (name + (tc.function.name or ""),
                                   args + (tc.function.arguments or ""))
    return content, list(calls.values())


def test_a_conversation_with_tool_results_continues(client) -> None:
    messages = [{"role": "user", "content": "What's the weather in Oslo?"}]
    first = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER],
                                           tool_choice="required", max_tokens=120,
                                           temperature=0).choices[0].message
    call = first.tool_calls[0]
    messages += [first.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 degrees."}]
    second = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER],
                                            tool_choice="none", max_tokens=30, temperature=0)
    assert second.choices[0].message.content
    assert not second.choices[0].message.tool_calls


@pytest.mark.parametrize("stream", [False, True])
def test_a_grammar_that_breaks_in_the_worker_is_an_error_not_an_answer(client, stream) -> None:
    """It passes the gateway's check (it compiles) and outgrows the parser at its first
    token: the caller gets the error, never a cut text with finish_reason "stop"; greedy, it
    would be a result-cache entry if it were an answer, so it is asked twice."""
    huge = "start: " + " | ".join(f'"t{i}"' for i in range(5000))
    for _ in range(2):
        with pytest.raises(openai.APIError) as err:
            resp = client.chat.completions.create(
                model=MODEL, messages=ASK, max_tokens=8, temperature=0, stream=stream,
                extra_body={"guided_grammar": huge})
            for _ in resp if stream else ():
                pass
        assert "max is 2000" in str(err.value)
        if not stream:  # a stream's error event comes after its 200
            assert err.value.status_code == 400 and err.value.body["param"] == "grammar"


def test_a_bad_schema_is_a_400_naming_the_field(client) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model=MODEL, messages=ASK, max_tokens=5,
            response_format={"type": "json_schema", "json_schema": {
                "name": "x", "schema": {"type": "object", "properties": {"a": {"type": "?"}}}}})
    assert err.value.body["param"] == "response_format.json_schema.schema"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=5,
                                       tools=[WEATHER], tool_choice="sometimes")
    assert err.value.body["param"] == "tool_choice"
