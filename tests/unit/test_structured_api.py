"""The gateway's structured-output and tool fields: parsing, 400s naming the field, tool calls
parsed out of answers (whole and streamed), the result-cache key, and the template fallback."""

from __future__ import annotations

import json

import pytest

from cache.key import cache_key
from gateway.errors import ApiError
from gateway.openai_request import parse_chat, parse_completion
from gateway.openai_response import Gather, StreamShape
from gateway.tool_calls import split_tool_calls
from kvmesh.wire import Chunk

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
HI = [{"role": "user", "content": "hi"}]


def chat(**body):
    return parse_chat({"model": "m", "messages": HI, **body})


def test_response_format_becomes_a_grammar() -> None:
    assert chat(response_format={"type": "text"}).grammar_kind == ""
    req = chat(response_format={"type": "json_object"})
    assert (req.grammar_kind, json.loads(req.grammar)) == ("json_schema", {"type": "object"})
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    req = chat(response_format={"type": "json_schema",
                                "json_schema": {"name": "x", "schema": schema, "strict": True}})
    assert json.loads(req.grammar) == schema
    req = parse_completion({"model": "m", "prompt": "p", "guided_choice": ["a", "b"]})
    assert (req.grammar_kind, json.loads(req.grammar)) == ("choice", ["a", "b"])
    assert chat(guided_regex="[0-9]+").grammar_kind == "regex"


@pytest.mark.parametrize(("value", "kind", "grammar"), [
    ({"json": {"type": "object"}}, "json_schema", '{"type": "object"}'),
    ({"regex": "[0-9]+"}, "regex", "[0-9]+"),
    ({"choice": ["a", "b"]}, "choice", '["a", "b"]'),
    ({"grammar": 'start: "a"'}, "lark", 'start: "a"'),
    ({"json_object": True, "regex": None}, "json_schema", '{"type": "object"}'),
])
def test_structured_outputs_is_the_guided_fields_newer_form(value, kind, grammar) -> None:
    for req in (chat(structured_outputs=value),
                parse_completion({"model": "m", "prompt": "p", "structured_outputs": value})):
        assert (req.grammar_kind, req.grammar) == (kind, grammar)


@pytest.mark.parametrize(("body", "param"), [
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"response_format": "json"}, "response_format"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "nonsense"}}}}, "response_format.json_schema.schema"),
    ({"guided_regex": "a("}, "guided_regex"),
    ({"guided_choice": []}, "guided_choice"),
    ({"guided_regex": "a", "response_format": {"type": "json_object"}}, "guided_regex"),
    ({"structured_outputs": {"regex": "a("}}, "structured_outputs.regex"),
    ({"structured_outputs": {"choice": "a"}}, "structured_outputs.choice"),
    ({"structured_outputs": {"json": 3}}, "structured_outputs.json"),
    ({"structured_outputs": {"structural_tag": "x"}}, "structured_outputs.structural_tag"),
    ({"structured_outputs": {"regex": "a", "choice": ["a"]}}, "structured_outputs"),
    ({"structured_outputs": {"json_object": False}}, "structured_outputs"),
    ({"structured_outputs": {"json_object": "yes"}}, "structured_outputs.json_object"),
    ({"structured_outputs": "json"}, "structured_outputs"),
    ({"structured_outputs": {"regex": "a"}, "guided_regex": "b"}, "structured_outputs.regex"),
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]},
     "tools[0].function.name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"type": "wrong"}}}}}]},
     "tools[0].function.parameters"),
    ({"tools": [WEATHER, WEATHER]}, "tools[1].function.name"),
    ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
    ({"tool_choice": "auto"}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice.function.name"),
    ({"tools": [WEATHER], "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
    ({"functions": [{"name": "f"}]}, "functions"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": 3}}]}]},
     "messages[0].tool_calls[0].function.name"),
])
def test_bad_structured_fields_are_400s_naming_the_field(body, param) -> None:
    with pytest.raises(ApiError) as err:
        parse_chat({"model": "m", "messages": HI, **body})
    assert err.value.status == 400 and err.value.param == param


@pytest.mark.parametrize("params", [
    {"type": "string"}, {"type": "array", "items": {"type": "integer"}},
    {"type": ["object", "null"]}, {"type": []}, {"type": "null", "properties": {}}])
def test_parameters_that_are_no_object_schema_are_refused(params) -> None:
    """A call's arguments are an object: a grammar for other arguments would force calls the
    answer's parser never takes (a forced call that is never returned)."""
    from gateway.responses_request import parse_responses

    fn = {"name": "f", "parameters": params}
    with pytest.raises(ApiError) as err:
        chat(tools=[WEATHER, {"type": "function", "function": fn}], tool_choice="required")
    assert (err.value.status, err.value.code, err.value.param) == (
        400, "invalid_value", "tools[1].function.parameters")
    assert err.value.message.startswith("tools[1].function.parameters: must be an object")
    with pytest.raises(ApiError) as err:
        parse_responses({"model": "m", "input": "hi", "tools": [{"type": "function", **fn}]})
    assert (err.value.status, err.value.param) == (400, "tools[0].parameters")
    assert err.value.message.startswith("tools[0].parameters: must be an object")


@pytest.mark.parametrize("params", [
    {"type": "object"}, {"type": ["object"]}, {"properties": {"a": {"type": "integer"}}}, {}])
def test_object_parameters_with_or_without_a_type_are_taken(params) -> None:
    req = chat(tools=[{"type": "function", "function": {"name": "f", "parameters": params}}],
               tool_choice="required")
    assert json.loads(req.grammar)["tools"] == [["f", params]]


def test_tools_on_completions_are_refused() -> None:
    with pytest.raises(ApiError) as err:
        parse_completion({"model": "m", "prompt": "p", "tools": [WEATHER]})
    assert err.value.param == "tools"


def test_tool_choice_sets_the_tool_grammar() -> None:
    assert chat(tools=[WEATHER]).grammar_kind == ""  # auto: free text, calls parsed
    assert chat(tools=[WEATHER]).tool_names == {"get_weather"}
    assert chat(tools=[WEATHER], tool_choice="none").tool_names == frozenset()
    required = chat(tools=[WEATHER, TIME], tool_choice="required")
    assert required.grammar_kind == "tool_calls" and "get_time" in required.grammar
    named = chat(tools=[WEATHER, TIME],
                 tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert "get_time" in named.grammar and "get_weather" not in named.grammar


def test_history_tool_calls_and_results_reach_the_wire() -> None:
    req = chat(tools=[WEATHER], messages=[
        *HI, {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}])
    wire = req.to_wire("r", "inbox")
    assert wire.messages[1].tool_calls[0].arguments == '{"city": "Oslo"}'
    assert wire.messages[2].tool_call_id == "call_1"
    assert wire.tools[0].name == "get_weather"


def test_tools_and_tool_history_change_the_cache_key() -> None:
    base = cache_key(chat(temperature=0), "t", "r")
    assert cache_key(chat(temperature=0, tools=[WEATHER]), "t", "r") != base
    assert cache_key(chat(temperature=0, tools=[WEATHER], tool_choice="required"), "t", "r") \
        != cache_key(chat(temperature=0, tools=[WEATHER]), "t", "r")
    assert cache_key(chat(temperature=0, response_format={"type": "json_object"}), "t", "r") \
        != base
    def answered(call_id: str):
        return chat(temperature=0, messages=[
            {"role": "assistant", "tool_calls": [{"id": call_id, "type": "function", "function": {
                "name": "get_weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": call_id, "content": "x"}])

    assert cache_key(answered("1"), "t", "r") != cache_key(answered("2"), "t", "r")


NAMES = frozenset({"get_weather", "get_time"})


@pytest.mark.parametrize(("text", "content", "calls"), [
    ('<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>',
     None, [("get_weather", {"city": "Oslo"})]),
    ('Let me check.\n<tool_call>{"name":"get_weather","arguments":{"city":"A"}}</tool_call>\n'
     '<tool_call>{"name":"get_time","arguments":{}}</tool_call>',
     "Let me check.", [("get_weather", {"city": "A"}), ("get_time", {})]),
    ('{"name": "get_time", "parameters": {"tz": "UTC"}}', None, [("get_time", {"tz": "UTC"})]),
    ('<|python_tag|>{"name": "get_time", "parameters": {}}', None, [("get_time", {})]),
    ('<tool_call>{"name": "unknown", "arguments": {}}</tool_call>',
     '<tool_call>{"name": "unknown", "arguments": {}}</tool_call>', []),
    ('{"answer": 42}', '{"answer": 42}', []),
    ("plain text < with a bracket", "plain text < with a bracket", []),
])
def test_tool_calls_are_parsed_out_of_the_answer(text, content, calls) -> None:
    got_content, got_calls = split_tool_calls(text, NAMES)
    assert got_content == content
    assert [(c.name, json.loads(c.arguments)) for c in got_calls] == calls


def _chunks(text: str, size: int) -> list[Chunk]:
    pieces = [text[i:i + size] for i in range(0, len(text), size)]
    return [Chunk("r", i, 0, p, [1], finish_reason="stop" if i == len(pieces) - 1 else None)
            for i, p in enumerate(pieces)]


@pytest.mark.parametrize("size", [1, 3, 7, 1000])
def test_a_streamed_tool_call_reassembles_to_the_gathered_one(size) -> None:
    text = ('Sure.<tool_call>{"name":"get_weather","arguments":{"city":"Paris"}}</tool_call>\n'
            '<tool_call>{"name":"get_time","arguments":{}}</tool_call>')
    gather = Gather(1, False, NAMES)
    shape = StreamShape("chat", "r", 0, "m", False, NAMES)
    payloads = []
    for c in _chunks(text, size):
        gather.add(c)
        payloads += shape.payloads(c)
    whole = gather.chat("r", 0, "m")["choices"][0]
    assert whole["finish_reason"] == "tool_calls"
    content, calls = "", {}
    for p in payloads:
        delta = p["choices"][0]["delta"]
        content += delta.get("content") or ""
        for tc in delta.get("tool_calls") or []:
            if "id" in tc:  # the first delta of a call: id, type and name, no arguments yet
                assert tc["function"]["arguments"] == "" and tc["type"] == "function"
                calls[tc["index"]] = {"id": tc["id"], "name": tc["function"]["name"], "args": ""}
            else:
                calls[tc["index"]]["args"] += tc["function"]["arguments"]
    assert payloads[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert content == whole["message"]["content"] == "Sure."
    assert [(c["name"], c["args"]) for c in calls.values()] == [
        (t["function"]["name"], t["function"]["arguments"]) for t in whole["message"]["tool_calls"]]


def test_fallback_prompt_for_a_template_without_tools(smollm_gguf) -> None:
    from router.tokenize import PromptTokenizer

    tok = PromptTokenizer.load(str(smollm_gguf))
    req = chat(tools=[WEATHER], messages=[
        *HI, {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]).to_wire("r", "i")
    text = tok.tokenizer.decode(tok.encode(req), skip_special_tokens=False)
    assert "You can call functions" in text and '"name": "get_weather"' in text
    assert '<tool_call>{"name":"get_weather","arguments":{"city":"Oslo"}}</tool_call>' in text
    assert "<tool_response>\nsunny\n</tool_response>" in text


def test_a_tool_template_gets_tools_natively() -> None:
    from inference.engine.tokenizer import compile_template
    from router.tool_prompt import template_inputs

    template = ("{% for t in tools %}T:{{ t.function.name }};{% endfor %}{% for m in messages %}"
                "{{ m.role }}:{{ m.content }}{% for c in m.tool_calls or [] %}"
                "C:{{ c.function.arguments.city }}{% endfor %};{% endfor %}")
    req = chat(tools=[WEATHER], messages=[*HI, {"role": "assistant", "tool_calls": [{
        "id": "c1", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]).to_wire("r", "i")
    messages, extra = template_inputs(req.messages, req.tools, template)
    out = compile_template(template).render(messages=messages, **extra)
    assert out == "T:get_weather;user:hi;assistant:C:Oslo;tool:sunny;"


@pytest.mark.parametrize(("text", "reasoning", "content"), [
    ("<think>\nLet me see.\n</think>\n\nIt is 4.", "\nLet me see.\n", "It is 4."),
    ("It is 4.", None, "It is 4."),
    ("<thinking is fun", None, "<thinking is fun"),
    ("<think>cut off by max_tokens", "cut off by max_tokens", ""),
    ("  <think>a</think>b <think>c</think>", "a", "b <think>c</think>"),
])
def test_reasoning_is_split_off_a_leading_think_block(text, reasoning, content) -> None:
    from gateway.reasoning import split_reasoning

    assert split_reasoning(text) == (reasoning, content)


@pytest.mark.parametrize("size", [1, 4, 1000])
def test_streamed_reasoning_matches_the_gathered_answer(size) -> None:
    text = ('<think>\nThe user wants weather.\n</think>\n\n'
            '<tool_call>{"name":"get_weather","arguments":{"city":"Paris"}}</tool_call>')
    for names in (NAMES, frozenset()):
        gather = Gather(1, False, names)
        shape = StreamShape("chat", "r", 0, "m", False, names)
        deltas = []
        for c in _chunks(text, size):
            gather.add(c)
            deltas += [p["choices"][0]["delta"] for p in shape.payloads(c)]
        message = gather.chat("r", 0, "m")["choices"][0]["message"]
        assert message["reasoning_content"] == "\nThe user wants weather.\n"
        assert "".join(d.get("reasoning_content", "") for d in deltas) \
            == message["reasoning_content"]
        assert "".join(d.get("content") or "" for d in deltas) == (message["content"] or "")
        assert bool(message.get("tool_calls")) == bool(names)


def test_answers_without_think_stream_as_before() -> None:
    shape = StreamShape("chat", "r", 0, "m", False)
    chunks = _chunks("Hello <b>there</b>", 3)
    assert [shape.payloads(c) for c in chunks] == [
        [StreamShape("chat", "r", 0, "m", False).delta(c)] for c in chunks]


LLAMA31 = ('{{- "Respond in the format {"name": function name, "parameters": dictionary of '
           'argument name and its value}." }}{{- "<|python_tag|>" }}')


@pytest.mark.parametrize(("template", "form"), [
    (None, "hermes"), ("{{ messages }}", "hermes"), (LLAMA31, "llama3_json")])
def test_the_forced_call_form_follows_the_template(template, form, smollm_gguf) -> None:
    import llguidance

    from kvmesh.grammar import to_llguidance, tool_call_form
    from router.tokenize import PromptTokenizer

    assert tool_call_form(template) == form
    req = chat(tools=[WEATHER], tool_choice="required")
    tok = PromptTokenizer.load(str(smollm_gguf)).tokenizer
    matcher = llguidance.LLMatcher(llguidance.LLTokenizer(tok.to_json()),
                                   to_llguidance(req.grammar_kind, req.grammar, template))
    # the grammar accepts the form the parser reads, and the parser reads it back
    args_key = "parameters" if form == "llama3_json" else "arguments"
    call = json.dumps({"name": "get_weather", args_key: {"city": "Oslo"}}, separators=(",", ":"))
    text = call if form == "llama3_json" else f"<tool_call>{call}</tool_call>"
    assert matcher.consume_tokens(tok.encode(text)) and matcher.is_accepting(), \
        matcher.get_error()
    assert split_tool_calls(text, NAMES)[1][0].name == "get_weather"


def test_a_grammar_too_big_is_refused_naming_the_field() -> None:
    from kvmesh.grammar import MAX_SOURCE_BYTES

    props = {f"p{i}": {"type": "string"} for i in range(MAX_SOURCE_BYTES // 20)}
    with pytest.raises(ApiError) as err:
        chat(response_format={"type": "json_schema", "json_schema": {
            "name": "big", "schema": {"type": "object", "properties": props}}})
    assert err.value.param == "response_format.json_schema.schema"
    assert "limit" in err.value.message


@pytest.mark.parametrize("name", ["bad name!", "x" * 65, "", 7])
def test_a_schema_name_outside_openais_rule_is_refused(name) -> None:
    with pytest.raises(ApiError) as err:
        chat(response_format={"type": "json_schema", "json_schema": {
            "name": name, "schema": {"type": "object"}}})
    assert err.value.param == "response_format.json_schema.name"


@pytest.mark.parametrize("name", ["Person", "calendar_event-2", "x" * 64, None])
def test_a_schema_name_by_openais_rule_or_none_is_taken(name) -> None:
    chat(response_format={"type": "json_schema", "json_schema": {
        "name": name, "schema": {"type": "object"}}})
