"""What a grammar spec is: the plain data a constrained request carries, and how it is checked.

A request is constrained by two strings in its sampling fields: `grammar_kind` (one of `KINDS`,
"" for none) and `grammar` (its source). They travel as plain data (msgpack on the wire, pickle
to the engine process); only the engine compiles them (inference/engine/grammar.py).

| kind          | source                                  | made from (gateway)               |
|---------------|-----------------------------------------|-----------------------------------|
| `json_schema` | a JSON Schema, as JSON text             | `response_format`, `guided_json`  |
| `regex`       | a regular expression (Rust `regex`)     | `guided_regex`                    |
| `choice`      | a JSON array of strings                 | `guided_choice`                   |
| `lark`        | llguidance's Lark dialect (may `%json`) | `guided_grammar`                  |
| `tool_calls`  | `{"tools": [[name, parameters], ...],   | `tools` with `tool_choice`        |
|               | "parallel": bool, "free": bool}` (JSON) | `required` or a named function,   |
|               |                                         | or `auto` with a `strict` function|

A `tool_calls` spec becomes a grammar only where the chat template is known (the engine): the
calls take the form that template teaches (`tool_call_form`), Hermes `<tool_call>` blocks by
default, or Llama 3.1's bare `{"name", "parameters"}` JSON. With `free` the answer may be text
instead of calls, or beside them (`tool_call_lark` says where); every call it makes is held to
its tool's parameters.

The backend is llguidance (Rust, no Python dependencies, abi3 wheels): see docs/STRUCTURED.md.
`grammar_error` needs llguidance but neither torch nor a tokenizer, so the gateway can refuse a
bad schema with a 400 naming the user's field before the request travels. This module imports
nothing heavy at import time, and nothing of this tree: the engine imports it (kvmesh/layers.py).
"""

from __future__ import annotations

import functools
import json
from typing import Any

KINDS = ("json_schema", "regex", "choice", "lark", "tool_calls")
MAX_SOURCE_BYTES = 64 * 1024  # a bigger grammar is refused: it would stall a worker's step

# Tool calls as Hermes/Qwen templates write them; the grammar drives any model to this form.
COMPACT_JSON: dict[str, Any] = {"whitespace_flexible": False}
TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"


def to_llguidance(kind: str, source: str, template: str | None = None) -> str:
    """The llguidance grammar text of a spec; `template` (the model's chat template) picks
    the form of tool calls. Raises ValueError for an unknown kind."""
    import llguidance

    if kind == "tool_calls":
        spec = json.loads(source)
        tools = [(name, params) for name, params in spec["tools"]]
        return llguidance.LLMatcher.grammar_from_lark(tool_call_lark(
            tools, bool(spec.get("parallel")), tool_call_form(template), bool(spec.get("free"))))
    if kind == "json_schema":
        # Compact JSON unless the schema's "x-guidance" says otherwise: free whitespace lets
        # a small model loop on newlines and spaces until max_tokens.
        schema = closed_objects(json.loads(source))
        return llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=COMPACT_JSON)
    if kind == "regex":
        return llguidance.LLMatcher.grammar_from_regex(source)
    if kind == "lark":
        return llguidance.LLMatcher.grammar_from_lark(source)
    if kind == "choice":
        return llguidance.grammar_from("choice", source)
    raise ValueError(f"grammar_kind: must be one of {', '.join(KINDS)}, got {kind!r}")


_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_ONE = ("items", "additionalProperties", "not", "if", "then", "else", "contains")


def closed_objects(schema: Any) -> Any:
    """`schema` with `additionalProperties: false` on every object schema that lists
    `properties` and says nothing of extra ones: OpenAI's strict subset requires it, and
    xgrammar (vLLM's default) assumes it. Without it a small model invents keys until
    max_tokens. A schema that allows extra properties says so and keeps them."""
    if isinstance(schema, list):
        return [closed_objects(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in _SCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {k: closed_objects(v) for k, v in out[key].items()}
    for key in (*_SCHEMA_LISTS, *_SCHEMA_ONE):
        if key in out:
            out[key] = closed_objects(out[key])
    if "properties" in out and "additionalProperties" not in out \
            and "patternProperties" not in out:
        out["additionalProperties"] = False
    return out


def limits() -> Any:
    """Parser limits: a grammar that would take too long per token errors instead of hanging
    the worker (llguidance counts lexer "fuel" per step and caps the grammar's size)."""
    import llguidance

    return llguidance.LLParserLimits(step_lexer_fuel=1_000_000, initial_lexer_fuel=1_000_000,
                                     max_grammar_size=500_000)


@functools.lru_cache(maxsize=512)  # a request's spec is checked at each hop; ~0.5 ms each
def grammar_error(kind: str, source: str) -> str:
    """Why the spec cannot be used ("" when it can). No tokenizer needed."""
    if not kind:
        return "" if not source else "a grammar needs a grammar_kind"
    if kind not in KINDS:
        return f"must be one of {', '.join(KINDS)}, got {kind!r}"
    if len(source.encode()) > MAX_SOURCE_BYTES:
        return f"is {len(source.encode())} bytes; the limit is {MAX_SOURCE_BYTES}"
    if kind in ("json_schema", "choice"):
        try:
            value = json.loads(source)
        except ValueError as exc:
            return f"is not valid JSON: {exc}"
        if kind == "choice" and (not isinstance(value, list) or not value
                                 or not all(isinstance(v, str) for v in value)):
            return "must be a non-empty array of strings"
    if kind == "tool_calls" and not _tool_calls_ok(json.loads(source)):
        return 'must be {"tools": [[name, parameters object], ...], "parallel": bool, "free": bool}'

    import llguidance

    try:
        err = llguidance.LLMatcher.validate_grammar(to_llguidance(kind, source), None,
                                                    limits=limits())
    except Exception as exc:  # llguidance raises several types for a schema it cannot read
        return str(exc) or type(exc).__name__
    return "" if err.startswith("WARNING") else err


def _tool_calls_ok(spec: Any) -> bool:
    return isinstance(spec, dict) and isinstance(spec.get("tools"), list) and bool(spec["tools"]) \
        and all(isinstance(t, list) and len(t) == 2 and isinstance(t[0], str)
                and isinstance(t[1], dict) for t in spec["tools"])


def tool_calls_source(tools: list[tuple[str, dict[str, Any]]], parallel: bool,
                      free: bool = False) -> str:
    """The `grammar` of a `tool_calls` spec: calls to any of `tools` (name, parameters), and
    with `free` text instead of them or around them."""
    return json.dumps({"tools": [list(t) for t in tools], "parallel": parallel, "free": free})


def tool_call_form(template: str | None) -> str:
    """How a chat template teaches tool calls: "llama3_json" for Llama 3.1's (a bare JSON
    object with `parameters`), else "hermes" (`<tool_call>` blocks with `arguments`, Qwen and
    Hermes templates, and the fallback prompt for templates without tools)."""
    if template and ("<|python_tag|>" in template or '"parameters": dictionary' in template):
        return "llama3_json"
    return "hermes"


def tool_call_schema(tools: list[tuple[str, dict[str, Any]]],
                     args_key: str = "arguments") -> dict[str, Any]:
    """JSON Schema of one call `{"name": ..., "<args_key>": {...}}` to any of `tools`
    (name, parameters schema); parameter objects are closed as in `closed_objects`."""
    options = [{"type": "object",
                "properties": {"name": {"const": name},
                               args_key: closed_objects(params) or {"type": "object"}},
                "required": ["name", args_key], "additionalProperties": False}
               for name, params in tools]
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return {**schema, "x-guidance": COMPACT_JSON}


def tool_call_lark(tools: list[tuple[str, dict[str, Any]]], parallel: bool,
                   form: str = "hermes", free: bool = False) -> str:
    """A Lark grammar for one (or, with `parallel`, one or more) tool calls in `form`; with
    `free`, for an answer that may also be text (`tool_choice` auto):
    - Hermes, parallel: text, then any number of calls, each after its own text. The text
      before a call ends at its `<tool_call>` (a lazy lexeme, so `<tool_call>` in the text
      always opens a call), and the call must match a tool; text may follow the last call.
    - Hermes, one call: text, or text and one call, which ends the answer.
    - Llama 3.1: text that does not open with `{`, or one call.

    Hermes parallel calls follow each other with no separator: after `</tool_call>` the model
    chooses between ending and `<tool_call>`. With a newline allowed there, a small model
    takes the newline and then repeats the same call until max_tokens. The Llama 3.1 form
    has one call per answer."""
    if form == "llama3_json":
        schema = json.dumps(tool_call_schema(tools, "parameters"), separators=(",", ":"))
        if free:  # the whole answer is a call exactly when it opens with "{"
            return f"start: TEXT | call\ncall: %json {schema}\nTEXT: /\\s*([^\\s{{](?s:.*))?/\n"
        return f"start: %json {schema}\n"
    schema = json.dumps(tool_call_schema(tools), separators=(",", ":"))
    if free:
        start = "start: called* TEXT" if parallel else "start: TEXT | called"
        return (f"{start}\ncalled: before %json {schema} \"{TOOL_CALL_CLOSE}\"\n"
                f"before[lazy]: TEXT \"{TOOL_CALL_OPEN}\"\nTEXT: /(?s:.*)/\n")
    call = f'call: "{TOOL_CALL_OPEN}" %json {schema} "{TOOL_CALL_CLOSE}"'
    start = "start: call+" if parallel else "start: call"
    return f"{start}\n{call}\n"
