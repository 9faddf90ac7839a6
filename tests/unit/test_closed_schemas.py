"""Closed objects (kvmesh/grammar.py `closed_objects`): an object schema that says nothing of
extra keys forbids them, so that a small model cannot invent keys; an object composed of
several schemas (`allOf`, a `$ref` base or `anyOf` options beside its own `properties`) is
closed as a whole, so that each part's keys stay allowed. The grammars run on the real
SmolLM2 tokenizer."""

from __future__ import annotations

import json

import llguidance
import pytest

from gateway.openai_request import parse_chat
from kvmesh.grammar import grammar_error, to_llguidance

INT = {"type": "integer"}
TWO_BRANCHES = {"type": "object", "allOf": [{"properties": {"a": INT}, "required": ["a"]},
                                            {"properties": {"b": INT}, "required": ["b"]}]}
BASE_AND_OWN = {"$defs": {"base": {"type": "object", "properties": {"a": INT},
                                   "required": ["a"]}},
                "allOf": [{"$ref": "#/$defs/base"}], "properties": {"b": INT}, "required": ["b"]}
REF_BESIDE_OWN = {**BASE_AND_OWN, "allOf": None, "$ref": "#/$defs/base"}
# pydantic v1 wraps a described field's $ref in a one-branch allOf: nothing is composed there
WRAPPED = {"type": "object", "required": ["f"],
           "properties": {"f": {"allOf": [{"$ref": "#/definitions/Foo"}], "description": "x"}},
           "definitions": {"Foo": {"type": "object", "properties": {"x": INT},
                                   "required": ["x"]}}}


@pytest.fixture(scope="module")
def tokenizer(smollm_gguf):
    from router.tokenize import PromptTokenizer

    return llguidance.LLTokenizer(PromptTokenizer.load(str(smollm_gguf)).tokenizer.to_json())


def _schema_req(schema: dict):
    return parse_chat({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                       "response_format": {"type": "json_schema",
                                           "json_schema": {"name": "x", "schema": schema}}})


def _accepts(tokenizer, schema: dict, value: dict) -> bool:
    req = _schema_req({k: v for k, v in schema.items() if v is not None})
    matcher = llguidance.LLMatcher(tokenizer, to_llguidance(req.grammar_kind, req.grammar))
    text = json.dumps(value, separators=(",", ":"))
    return all(matcher.consume_token(t) for t in tokenizer.tokenize_str(text)) \
        and matcher.is_accepting()


@pytest.mark.parametrize("schema", [TWO_BRANCHES, BASE_AND_OWN, REF_BESIDE_OWN],
                         ids=["all_of", "base_ref_in_all_of", "ref_beside_properties"])
def test_a_composed_object_takes_every_parts_keys_and_no_other(tokenizer, schema) -> None:
    assert _accepts(tokenizer, schema, {"a": 1, "b": 2})
    assert not _accepts(tokenizer, schema, {"a": 1})  # each part's `required` still holds
    assert not _accepts(tokenizer, schema, {"a": 1, "b": 2, "c": 3})  # closed as a whole


def test_a_composed_object_is_a_tools_parameters_too() -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": TWO_BRANCHES}}
    req = parse_chat({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                      "tools": [tool], "tool_choice": "required"})
    assert grammar_error(req.grammar_kind, req.grammar) == ""


def test_objects_outside_a_composition_stay_closed(tokenizer) -> None:
    plain = {"type": "object", "properties": {"a": INT}}
    assert _accepts(tokenizer, plain, {"a": 1})
    assert not _accepts(tokenizer, plain, {"a": 1, "c": 3})
    assert _accepts(tokenizer, WRAPPED, {"f": {"x": 1}})
    assert not _accepts(tokenizer, WRAPPED, {"f": {"x": 1, "y": 2}})


def test_a_part_that_takes_extra_keys_leaves_the_whole_open(tokenizer) -> None:
    loose = {"allOf": [{"properties": {"a": INT}, "additionalProperties": True},
                       {"properties": {"b": INT}}]}
    assert _accepts(tokenizer, loose, {"a": 1, "b": 2, "c": 3})


def test_options_beside_its_own_keys_are_parts_too(tokenizer) -> None:
    """`anyOf` options that add keys to an object with keys of its own: before, each was
    closed, so no option's key was allowed beside the object's."""
    options = {"type": "object", "properties": {"kind": {"type": "string"}},
               "required": ["kind"],
               "anyOf": [{"properties": {"a": INT}, "required": ["a"]},
                         {"properties": {"b": INT}, "required": ["b"]}]}
    # (the grammar writes the parts' keys first, then the object's own)
    assert _accepts(tokenizer, options, {"a": 1, "kind": "x"})
    assert _accepts(tokenizer, options, {"b": 2, "kind": "y"})
    assert not _accepts(tokenizer, options, {"kind": "x"})  # an option must hold
    assert not _accepts(tokenizer, options, {"a": 1, "kind": "x", "c": 3})  # closed as a whole
    nullable = {"anyOf": [{"type": "object", "properties": {"a": INT}}, {"type": "null"}]}
    assert not _accepts(tokenizer, nullable, {"a": 1, "c": 3})  # no keys of its own: as before
