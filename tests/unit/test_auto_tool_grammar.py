"""The grammars of `tool_choice` auto (kvmesh/grammar.py `ToolCallSpec`), in each form a
template teaches: with a `strict` function the answer stays free, but every call it makes is
held to its tool's parameters; beside a JSON `response_format` the answer is that JSON or
calls. The grammars run on the real SmolLM2 tokenizer (llguidance); what they accept, the
gateway's parser reads back as calls or content."""

from __future__ import annotations

import json

import llguidance
import pytest

from gateway.openai_request import parse_chat
from gateway.tool_calls import split_tool_calls
from kvmesh.grammar import grammar_error, to_llguidance

CITY = {"type": "object", "properties": {"city": {"type": "string"},
                                         "unit": {"enum": ["kelvin"]}},
        "required": ["city", "unit"]}


def _tool(name: str, params: dict, strict: bool | None) -> dict:
    return {"type": "function", "function": {"name": name, "parameters": params,
                                             "strict": strict}}


WEATHER = _tool("get_weather", CITY, True)
LOOSE = _tool("note", {"type": "object", "properties": {"text": {"type": "string"}}}, None)
NAMES = frozenset({"get_weather", "note"})
LLAMA31 = '{{- "<|python_tag|>" }}'  # enough for tool_call_form to pick Llama 3.1's form


def chat(**body):
    return parse_chat({"model": "m", "messages": [{"role": "user", "content": "hi"}], **body})


@pytest.fixture(scope="module")
def tokenizer(smollm_gguf):
    from router.tokenize import PromptTokenizer

    return PromptTokenizer.load(str(smollm_gguf)).tokenizer


def _accepts(tokenizer, req, text: str, template: str | None = None) -> tuple[bool, bool]:
    """(whether the request's grammar takes `text`, whether it then must end)."""
    matcher = llguidance.LLMatcher(llguidance.LLTokenizer(tokenizer.to_json()),
                                   to_llguidance(req.grammar_kind, req.grammar, template))
    ok = all(matcher.consume_token(t) for t in tokenizer.encode(text))
    return ok and matcher.is_accepting(), matcher.is_stopped()


def _call(name: str, args: dict, key: str = "arguments") -> str:
    return json.dumps({"name": name, key: args}, separators=(",", ":"))


GOOD = f'<tool_call>{_call("get_weather", {"city": "Oslo", "unit": "kelvin"})}</tool_call>'
BAD_ARGS = f'<tool_call>{_call("get_weather", {"city": "Oslo", "unit": "celsius"})}</tool_call>'
UNKNOWN = f'<tool_call>{_call("get_time", {})}</tool_call>'
ANY_NOTE = f'<tool_call>{_call("note", {"anything": [1, 2]})}</tool_call>'


def test_a_strict_function_under_auto_gets_a_free_grammar() -> None:
    req = chat(tools=[WEATHER, LOOSE])
    assert req.grammar_kind == "tool_calls" and req.tool_choice == "auto"
    spec = json.loads(req.grammar)
    assert spec["free"] and spec["parallel"]
    # the strict function's schema; any object for the one that is not strict
    assert spec["tools"] == [["get_weather", CITY], ["note", {}]]
    assert not grammar_error(req.grammar_kind, req.grammar)
    assert json.loads(chat(tools=[WEATHER], parallel_tool_calls=False).grammar)["parallel"] \
        is False


def test_without_strict_or_beside_a_grammar_of_its_own_auto_stays_unconstrained() -> None:
    assert chat(tools=[LOOSE, _tool("f", CITY, False)]).grammar_kind == ""
    regex = chat(tools=[WEATHER], guided_regex="[0-9]+")
    assert regex.grammar_kind == "regex"  # the caller's grammar wins: no call can be made
    assert chat(tools=[WEATHER], tool_choice="none").grammar_kind == ""
    forced = json.loads(chat(tools=[WEATHER, LOOSE], tool_choice="required").grammar)
    assert not forced["free"] and forced["tools"][1] == ["note", LOOSE["function"]["parameters"]]


@pytest.mark.parametrize(("text", "calls"), [
    ("The weather is fine.", 0), ("", 0), ("a < b, and <tool_ca is text", 0),
    (GOOD, 1), (f"Let me look.{GOOD}", 1), (f"{GOOD}{GOOD} Both asked.", 2), (ANY_NOTE, 1)])
def test_free_text_and_calls_that_match_their_tools_are_taken(tokenizer, text, calls) -> None:
    assert _accepts(tokenizer, chat(tools=[WEATHER, LOOSE]), text) == (True, False)
    assert len(split_tool_calls(text, NAMES)[1]) == calls


@pytest.mark.parametrize("text", [BAD_ARGS, UNKNOWN, f"First {GOOD} then {BAD_ARGS}",
                                  '<tool_call>{"city": "Oslo"}</tool_call>'])
def test_a_call_that_breaks_its_schema_cannot_be_written(tokenizer, text) -> None:
    assert _accepts(tokenizer, chat(tools=[WEATHER, LOOSE]), text)[0] is False


def test_one_call_ends_the_answer_when_parallel_calls_are_off(tokenizer) -> None:
    req = chat(tools=[WEATHER], parallel_tool_calls=False)
    assert _accepts(tokenizer, req, "Just text.") == (True, False)
    assert _accepts(tokenizer, req, f"Looking.{GOOD}") == (True, True)  # nothing may follow
    assert _accepts(tokenizer, req, f"{GOOD} more")[0] is False


@pytest.mark.parametrize(("text", "ok"), [
    ("It is sunny.", True), ("", True), ("  Plain text.", True),
    (_call("get_weather", {"city": "Oslo", "unit": "kelvin"}, "parameters"), True),
    (_call("get_weather", {"city": "Oslo", "unit": "celsius"}, "parameters"), False),
    ('{"temperature": 3}', False), (' {"name": "get_weather"', False)])
def test_the_llama31_form_is_text_or_one_call(tokenizer, text, ok) -> None:
    req = chat(tools=[WEATHER])
    assert _accepts(tokenizer, req, text, LLAMA31)[0] is ok
    if ok and text.startswith("{"):
        assert split_tool_calls(text, NAMES)[1][0].name == "get_weather"


PET = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


@pytest.mark.parametrize("rf", [
    {"type": "json_schema", "json_schema": {"name": "pet", "schema": PET}},
    {"type": "json_object"}])
def test_a_json_format_beside_tools_is_that_json_or_calls(tokenizer, rf) -> None:
    req = chat(tools=[WEATHER, LOOSE], response_format=rf)
    spec = json.loads(req.grammar)
    assert req.grammar_kind == "tool_calls" and not spec["free"]
    assert spec["answer"] == json.loads(chat(response_format=rf).grammar)
    pet = '{"name":"Rex"}'
    assert _accepts(tokenizer, req, pet) == (True, True)
    assert split_tool_calls(pet, NAMES) == (pet, [])  # the answer stays content
    assert _accepts(tokenizer, req, GOOD + ANY_NOTE)[0]
    assert [c.name for c in split_tool_calls(GOOD + ANY_NOTE, NAMES)[1]] == ["get_weather", "note"]
    for text in ("Rex is a dog.", f"Sure.{GOOD}", BAD_ARGS, f"{pet}{GOOD}"):
        assert _accepts(tokenizer, req, text)[0] is False, text


def test_the_llama31_form_beside_a_json_format_is_that_json_or_one_call(tokenizer) -> None:
    rf = {"type": "json_schema", "json_schema": {"name": "pet", "schema": PET}}
    req = chat(tools=[WEATHER], response_format=rf)
    call = _call("get_weather", {"city": "Oslo", "unit": "kelvin"}, "parameters")
    assert _accepts(tokenizer, req, '{"name":"Rex"}', LLAMA31)[0]
    assert _accepts(tokenizer, req, call, LLAMA31)[0]
    assert split_tool_calls(call, NAMES)[1][0].name == "get_weather"
    bad = _call("get_weather", {"city": "Oslo", "unit": "celsius"}, "parameters")
    assert _accepts(tokenizer, req, bad, LLAMA31)[0] is False
    assert _accepts(tokenizer, req, "Rex", LLAMA31)[0] is False


@pytest.mark.parametrize(("spec", "why"), [
    ({"tools": [], "parallel": True}, "must be {"),
    ({"tools": [["f", "not a schema"]]}, "must be {"),
    ({"tools": [["f", {}]], "free": True, "answer": PET}, "not beside free"),
    ({"tools": [["f", {}]], "answer": [1]}, "answer: must be a JSON Schema object")])
def test_a_malformed_tool_call_spec_says_what_is_wrong(spec, why) -> None:
    assert why in grammar_error("tool_calls", json.dumps(spec))


def test_past_parallel_calls_are_shown_in_the_form_the_grammar_writes(tokenizer) -> None:
    """A template without tools shows an earlier turn's calls as the calls grammar would
    have written them, back to back: the model sees its past calls in the form it is held
    to (router/tool_prompt.py)."""
    from kvmesh.wire import ChatMessage, ToolCall
    from router.tool_prompt import template_inputs

    turn = ChatMessage("assistant", "", tool_calls=[
        ToolCall("a", "get_weather", '{"city":"Oslo","unit":"kelvin"}'),
        ToolCall("b", "get_weather", '{"city":"Rome","unit":"kelvin"}')])
    messages, _ = template_inputs([ChatMessage("user", "hi"), turn], None, template=None)
    shown = messages[-1]["content"]
    req = chat(tools=[WEATHER], tool_choice="required")
    assert _accepts(tokenizer, req, shown) == (True, False)


REFS = {"type": "object", "required": ["place", "unit"],
        "properties": {"place": {"$ref": "#/$defs/Place"}, "unit": {"$ref": "#/$defs/Unit"}},
        "$defs": {"Unit": {"enum": ["kelvin"]},
                  "Place": {"type": "object", "required": ["city", "near"],
                            "properties": {"city": {"type": "string"},
                                           "near": {"anyOf": [{"$ref": "#/$defs/Place"},
                                                              {"type": "null"}]}}}}}
OLD_STYLE = {"type": "object", "required": ["n", "again"],
             "properties": {"n": {"$ref": "#/definitions/N"},
                            "again": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}},
             "definitions": {"N": {"type": "integer"}}}


@pytest.mark.parametrize("choice", ["auto", "required"])
def test_parameters_that_refer_to_their_own_root_resolve(tokenizer, choice) -> None:
    """pydantic's `$defs` (an enum, a nested and recursive model), `definitions` and `#`:
    each tool's refs resolve inside its own parameters, two tools' alike-named defs apart."""
    req = chat(tools=[_tool("get_weather", REFS, True), _tool("count", OLD_STYLE, True),
                      _tool("near", {**REFS, "$defs": {**REFS["$defs"],
                                                       "Unit": {"enum": ["celsius"]}}}, True)],
               tool_choice=choice)
    assert grammar_error(req.grammar_kind, req.grammar) == ""
    place = {"city": "Oslo", "near": {"city": "Bergen", "near": None}}

    def call(name: str, args: dict) -> str:
        return f"<tool_call>{_call(name, args)}</tool_call>"

    assert _accepts(tokenizer, req, call("get_weather", {"place": place, "unit": "kelvin"}))[0]
    assert not _accepts(tokenizer, req, call("get_weather", {"place": place,
                                                            "unit": "celsius"}))[0]
    assert _accepts(tokenizer, req, call("near", {"place": place, "unit": "celsius"}))[0]
    assert _accepts(tokenizer, req, call("count", {"n": 3, "again": {"n": 4, "again": None}}))[0]
    assert not _accepts(tokenizer, req, call("count", {"n": "3", "again": None}))[0]
