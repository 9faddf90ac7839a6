"""Structured output and tool fields of a request, validated into a grammar spec and tools.

Fields (chat and completions unless said):
- `response_format`: `{"type": "text"}`, `{"type": "json_object"}` (any JSON object) or
  `{"type": "json_schema", "json_schema": {"name", "description", "schema", "strict"}}`.
- vLLM's extensions (sent through `extra_body`): `guided_json` (a schema), `guided_regex`,
  `guided_choice` (a list of strings), `guided_grammar` (llguidance Lark), and their newer
  form `structured_outputs`: an object with one of `json`, `regex`, `choice`, `grammar` (the
  same values) or `json_object: true` (any JSON object); its other keys are a 400.
- chat only: `tools` (functions with JSON-Schema `parameters`, an object's: a `type` other
  than "object" is a 400), `tool_choice` (`none`, `auto`, `required` or
  `{"type": "function", "function": {"name"}}`), `parallel_tool_calls`.

A key these objects (and `tools[i]`, `tools[i].function`) do not define is a 400 naming it
(gateway/nested_keys.py): `response_format.schema` beside `json_object` is refused, not dropped.
At most one of `response_format` (other than text), the `guided_*` fields and
`structured_outputs` may be set.
`tool_choice` `required` or a named function constrains the answer to tool calls (a
`tool_calls` grammar, which replaces any other). `auto` leaves the answer free and the
gateway parses any calls (gateway/tool_calls.py); with `parallel_tool_calls: false` it keeps
the first complete call and drops the rest. Two cases of `auto` get a `tool_calls` grammar
too, whose calls match a tool's parameters (a `strict` one's schema, any object for the
others): beside a JSON `response_format` (or `guided_json`), the answer is that JSON or calls,
so a caller who wants both a format and tools gets either; and, with no grammar of the
request's own, when a function is `strict`, text stays free around the calls (with
`parallel_tool_calls: false` one call is allowed, and it ends the answer). Beside a
`guided_regex`, `guided_choice` or `guided_grammar`, that grammar holds the answer and no tool
can be called. Every schema and grammar is compiled here (llguidance, no tokenizer) so a bad
one is a 400 naming the user's field, never a worker error.
"""

from __future__ import annotations

import json
import re
from typing import Any

from gateway.errors import bad_field
from gateway.nested_keys import check_keys, given
from kvmesh.grammar import ToolCallSpec, grammar_error
from kvmesh.wire import SamplingFields, ToolDef

_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_FORMAT_KEYS = {"text": ("type",), "json_object": ("type",), "json_schema": ("type", "json_schema")}
_SCHEMA_KEYS = ("name", "description", "schema", "strict")
_TOOL_KEYS = ("type", "function")
_FUNCTION_KEYS = ("name", "description", "parameters", "strict")
_GUIDED = {"guided_json": "json_schema", "guided_regex": "regex", "guided_choice": "choice",
           "guided_grammar": "lark"}
_STRUCTURED = {"json": "json_schema", "regex": "regex", "choice": "choice", "grammar": "lark"}
ANY_OBJECT = '{"type": "object"}'


def parse_grammar(body: dict[str, Any], req: SamplingFields) -> None:
    """Set `req.grammar_kind`/`req.grammar` from `response_format`, a `guided_*` field or
    `structured_outputs`."""
    specs: list[tuple[str, str, str]] = []  # (param, kind, source)
    if (rf := _response_format(body.get("response_format"))) is not None:
        specs.append(rf)
    specs += [_guided(name, kind, body[name]) for name, kind in _GUIDED.items()
              if body.get(name) is not None]
    specs += _structured_outputs(body.get("structured_outputs"))
    if len(specs) > 1:
        raise bad_field(specs[1][0], f"cannot be combined with {specs[0][0]}")
    if specs:
        param, kind, source = specs[0]
        _check(param, kind, source)
        req.grammar_kind, req.grammar = kind, source


def _guided(param: str, kind: str, value: Any) -> tuple[str, str, str]:
    """(param, kind, source) of one guided value (a schema, regex, choice list or grammar)."""
    if kind in ("regex", "lark") and not isinstance(value, str):
        raise bad_field(param, "must be a string")
    if kind == "json_schema" and not isinstance(value, dict | str):
        raise bad_field(param, "must be a JSON Schema object")
    return param, kind, value if isinstance(value, str) else json.dumps(value)


def _structured_outputs(so: Any) -> list[tuple[str, str, str]]:
    """vLLM's `structured_outputs` object as the guided fields' specs (one of them)."""
    if so is None:
        return []
    if not isinstance(so, dict):
        raise bad_field("structured_outputs", "must be an object")
    check_keys(so, (*_STRUCTURED, "json_object"), "structured_outputs")
    json_object = so.get("json_object")
    if json_object is not None and not isinstance(json_object, bool):
        raise bad_field("structured_outputs.json_object", "must be a boolean")
    specs = [_guided(f"structured_outputs.{key}", kind, so[key])
             for key, kind in _STRUCTURED.items() if so.get(key) is not None]
    if json_object:
        specs.append(("structured_outputs.json_object", "json_schema", ANY_OBJECT))
    if len(specs) != 1:
        raise bad_field("structured_outputs", "give exactly one of json, regex, choice, "
                        "grammar and json_object: true")
    return specs


def _response_format(rf: Any) -> tuple[str, str, str] | None:
    if rf is None:
        return None
    if not isinstance(rf, dict):
        raise bad_field("response_format", "must be an object")
    kind = rf.get("type")
    if kind not in _FORMAT_KEYS:
        raise bad_field("response_format.type", "must be text, json_object or json_schema")
    check_keys(rf, _FORMAT_KEYS[kind], "response_format")  # json_object takes no schema
    if kind == "text":
        return None
    if kind == "json_object":
        return "response_format", "json_schema", ANY_OBJECT
    spec = rf.get("json_schema")
    if not isinstance(spec, dict):
        raise bad_field("response_format.json_schema", "required, an object")
    check_keys(spec, _SCHEMA_KEYS, "response_format.json_schema")
    name = given(spec, "name", None)
    if name is not None and (not isinstance(name, str) or not _TOOL_NAME.match(name)):
        # OpenAI's rule for a schema's name, as for a function's
        raise bad_field("response_format.json_schema.name", "must match ^[a-zA-Z0-9_-]{1,64}$")
    if not isinstance(given(spec, "description", ""), str):
        raise bad_field("response_format.json_schema.description", "must be a string")
    if not isinstance(given(spec, "strict", False), bool):
        raise bad_field("response_format.json_schema.strict", "must be a boolean")
    schema = given(spec, "schema", {})
    if not isinstance(schema, dict):
        raise bad_field("response_format.json_schema.schema", "must be a JSON Schema object")
    return "response_format.json_schema.schema", "json_schema", json.dumps(schema)


def _check(param: str, kind: str, source: str) -> None:
    if err := grammar_error(kind, source):
        raise bad_field(param, err)


def parse_tools(body: dict[str, Any]) -> tuple[list[ToolDef] | None, str, str | None, bool]:
    """(tools, tool_choice, the named function or None, parallel_tool_calls)."""
    raw = body.get("tools")
    for legacy in ("functions", "function_call"):
        if body.get(legacy) is not None:
            raise bad_field(legacy, "deprecated and not supported; use tools and tool_choice")
    parallel = given(body, "parallel_tool_calls", True)
    if not isinstance(parallel, bool):
        raise bad_field("parallel_tool_calls", "must be a boolean")
    tools = None if raw is None else _tools(raw)
    choice, name = _tool_choice(body.get("tool_choice"), tools)
    return tools, choice, name, parallel


def _tools(raw: Any) -> list[ToolDef]:
    if not isinstance(raw, list) or not raw or len(raw) > 128:
        raise bad_field("tools", "must be a non-empty array of at most 128 tools")
    out: list[ToolDef] = []
    for i, t in enumerate(raw):
        where = f"tools[{i}]"
        if not isinstance(t, dict) or t.get("type") != "function":
            raise bad_field(f"{where}.type", "must be 'function'")
        check_keys(t, _TOOL_KEYS, where)
        fn = t.get("function")
        if not isinstance(fn, dict):
            raise bad_field(f"{where}.function", "required, an object")
        check_keys(fn, _FUNCTION_KEYS, f"{where}.function")
        name = fn.get("name")
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            raise bad_field(f"{where}.function.name", "must match ^[a-zA-Z0-9_-]{1,64}$")
        if any(d.name == name for d in out):
            raise bad_field(f"{where}.function.name", f"duplicate function name {name!r}")
        desc = fn.get("description", "")
        if not isinstance(desc, str | None):
            raise bad_field(f"{where}.function.description", "must be a string")
        strict = fn.get("strict")
        if not isinstance(strict, bool | None):
            raise bad_field(f"{where}.function.strict", "must be a boolean")
        source = _parameters_source(fn.get("parameters"), f"{where}.function.parameters")
        out.append(ToolDef(name, desc or "", source, bool(strict)))
    return out


def _parameters_source(params: Any, param: str) -> str:
    """A function's `parameters` as schema text ("" when absent: it takes none). Arguments
    are a JSON object (OpenAI's, and the only kind the answer's parser takes as a call), so a
    schema whose `type` is not "object" is refused: its grammar would force calls that are
    never returned. A schema without `type` (`properties` alone) is taken as an object's."""
    if params is None:
        return ""
    if not isinstance(params, dict):
        raise bad_field(param, "must be a JSON Schema object")
    kind = params.get("type", "object")
    if kind != "object" and not (isinstance(kind, list) and kind
                                 and all(k == "object" for k in kind)):
        raise bad_field(param, f'must be an object schema (type "object"), got type '
                        f"{json.dumps(kind)}: a function's arguments are a JSON object")
    source = json.dumps(params)
    _check(param, "json_schema", source)
    return source


def _tool_choice(raw: Any, tools: list[ToolDef] | None) -> tuple[str, str | None]:
    if raw is None:
        return ("auto" if tools else "none"), None
    if tools is None:
        raise bad_field("tool_choice", "only allowed when tools are given")
    if raw in ("none", "auto", "required"):
        return raw, None
    if isinstance(raw, dict) and raw.get("type") == "function" \
            and isinstance(raw.get("function"), dict):
        check_keys(raw, _TOOL_KEYS, "tool_choice")
        check_keys(raw["function"], ("name",), "tool_choice.function")
        name = raw["function"].get("name")
        if any(t.name == name for t in tools):
            return "function", name
        raise bad_field("tool_choice.function.name", f"no tool is named {name!r}")
    raise bad_field("tool_choice", "must be none, auto, required or "
                    '{"type": "function", "function": {"name": ...}}')


def tool_grammar(tools: list[ToolDef], choice: str, name: str | None, parallel: bool,
                 own_kind: str = "", own_source: str = "") -> str | None:
    """The `tool_calls` grammar source of a request with `tools`, or None when the answer
    keeps its own grammar (`own_kind`, `own_source`; "" for none) or none. Forced calls
    (`required` or a named function) match every chosen tool's parameters, strict or not,
    and replace any grammar of the request's own. Under `auto`, beside a JSON grammar the
    answer is that JSON or calls; with no grammar and a `strict` function, text or calls; a
    free or JSON answer's calls to a function that is not strict take any arguments object.
    The engine picks the calls' form from the model's template."""
    if choice == "auto":
        loose = tuple((t.name, _parameters(t) if t.strict else {}) for t in tools)
        if own_kind == "json_schema":
            return ToolCallSpec(loose, parallel, answer=json.loads(own_source)).source()
        if not own_kind and any(t.strict for t in tools):
            return ToolCallSpec(loose, parallel, free=True).source()
        return None
    if choice not in ("required", "function"):
        return None
    chosen = tuple((t.name, _parameters(t)) for t in tools
                   if choice == "required" or t.name == name)
    return ToolCallSpec(chosen, parallel and choice == "required").source()


# A function without `parameters` takes none (OpenAI: "an empty parameter list"): its calls'
# arguments are `{}`, as the prompt shows it (router/tool_prompt.py), never any object.
NO_PARAMETERS = {"type": "object", "properties": {}, "additionalProperties": False}


def _parameters(tool: ToolDef) -> dict[str, Any]:
    return json.loads(tool.parameters) if tool.parameters else NO_PARAMETERS
