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
| `tool_calls`  | a `ToolCallSpec` as JSON: the tools     | `tools` with `tool_choice`        |
|               | (name, parameters), `parallel`, `free`, | `required` or a named function;   |
|               | `answer`                                | `auto` with a `strict` function   |
|               |                                         | or beside a JSON `response_format`|

A `tool_calls` spec becomes a grammar only where the chat template is known (the engine): the
calls take the form that template teaches (`tool_call_form`), Hermes `<tool_call>` blocks by
default, or Llama 3.1's bare `{"name", "parameters"}` JSON. Beside the calls the answer may be
free text (`free`) or JSON of a schema (`answer`): `tool_call_lark` says where.

The backend is llguidance (Rust, no Python dependencies, abi3 wheels): see docs/STRUCTURED.md.
`grammar_error` needs llguidance but neither torch nor a tokenizer, so the gateway can refuse a
bad schema with a 400 naming the user's field before the request travels. This module imports
nothing heavy at import time, and nothing of this tree: the engine imports it (kvmesh/layers.py).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
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
        return llguidance.LLMatcher.grammar_from_lark(
            tool_call_lark(ToolCallSpec.parse(source), tool_call_form(template)))
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
_IN_PLACE = ("allOf", "anyOf", "oneOf")  # subschemas that describe the same object as theirs


def closed_objects(schema: Any) -> Any:
    """`schema` with `additionalProperties: false` on every object schema that lists
    `properties` and says nothing of extra ones: OpenAI's strict subset requires it, and
    xgrammar (vLLM's default) assumes it. Without it a small model invents keys until
    max_tokens. A schema that allows extra properties says so and keeps them.

    An object composed of several schemas (`allOf` of two or more, or `allOf`, `$ref`,
    `anyOf` or `oneOf` beside `properties`: a base and its extensions or options) is closed
    as a whole instead: each part's `additionalProperties` sees only that part's
    `properties`, so closing the parts would forbid each other's keys. Its parts (their
    `allOf`/`anyOf`/`oneOf` entries and the local `$ref` targets within, `$defs` included)
    stay open, and the composing schema lists every key they name (the parts' first) and
    forbids the rest, unless a part allows extra keys (then all stay open)."""
    if isinstance(schema, list):
        return [closed_objects(s) for s in schema]
    open_at, keys_at = _compositions(schema)
    return _closed(schema, "", open_at, keys_at)


def _closed(schema: Any, at: str, open_at: set[str],
            keys_at: dict[str, list[str]]) -> Any:
    """`schema` (at JSON pointer `at` of the root) closed as `closed_objects` says."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in _SCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {k: _closed(v, f"{at}/{key}/{_escaped(k)}", open_at, keys_at)
                        for k, v in out[key].items()}
    for key in (*_SCHEMA_LISTS, *_SCHEMA_ONE):
        if isinstance(out.get(key), list):
            out[key] = [_closed(v, f"{at}/{key}/{i}", open_at, keys_at)
                        for i, v in enumerate(out[key])]
        elif key in out:
            out[key] = _closed(out[key], f"{at}/{key}", open_at, keys_at)
    if at in open_at or "additionalProperties" in out or "patternProperties" in out:
        return out
    if at in keys_at and isinstance(out.get("properties", {}), dict):
        # the parts' keys, each allowed here as the parts have it (`true`: the parts check it)
        out["properties"] = {**dict.fromkeys(keys_at[at], True),
                             **out.get("properties", {})}
    if "properties" in out:
        out["additionalProperties"] = False
    return out


def _compositions(root: Any) -> tuple[set[str], dict[str, list[str]]]:
    """The JSON pointers of the parts of every composed object in `root` (to stay open), and
    for each outermost composing schema that can be closed, the keys its parts name (in the
    parts' order, then its own)."""
    composed = {at: (node, dict(_parts(root, node, at, {at})))
                for at, node in _subschemas(root, "") if _composes(node)}
    open_at = {p for _, parts in composed.values() for p in parts}
    keys_at = {}
    for at, (node, parts) in composed.items():
        if at in open_at:
            continue  # a part of a bigger composition, which lists its keys
        schemas = [*parts.values(), node]
        if any("patternProperties" in s or s.get("additionalProperties", False) is not False
               for s in schemas):
            open_at.add(at)  # a part takes extra keys, so the whole does
            continue
        keys = (k for s in schemas for k in (*_names(s.get("properties")),
                                             *_names(s.get("required"))))
        keys_at[at] = list(dict.fromkeys(keys))
    return open_at, keys_at


def _composes(node: Any) -> bool:
    if not isinstance(node, dict):
        return False
    branches = node.get("allOf")
    own = "properties" in node or "patternProperties" in node
    # options beside its own keys (`anyOf`/`oneOf` adding keys) extend the object as parts do
    options = own and any(isinstance(node.get(k), list) for k in ("anyOf", "oneOf"))
    sources = (len(branches) if isinstance(branches, list) else 0) + ("$ref" in node) \
        + own + options
    return sources >= 2


def _parts(root: Any, node: dict[str, Any], at: str, seen: set[str]):
    """(pointer, schema) of each schema that describes the same object as `node` at `at`:
    its in-place entries and local `$ref` targets, recursively (`seen` guards cycles)."""
    found = [(f"{at}/{key}/{i}", part) for key in _IN_PLACE
             if isinstance(node.get(key), list) for i, part in enumerate(node[key])]
    ref = node.get("$ref")
    if _is_local_ref("$ref", ref):
        found.append((ref[1:], _resolved(root, ref[1:])))
    for pointer, part in found:
        if pointer not in seen and isinstance(part, dict):
            seen.add(pointer)
            yield pointer, part
            yield from _parts(root, part, pointer, seen)


def _subschemas(schema: Any, at: str):
    """(pointer, schema) of `schema` and of every schema within it."""
    yield at, schema
    if not isinstance(schema, dict):
        return
    for key in _SCHEMA_MAPS:
        if isinstance(schema.get(key), dict):
            for k, v in schema[key].items():
                yield from _subschemas(v, f"{at}/{key}/{_escaped(k)}")
    for key in (*_SCHEMA_LISTS, *_SCHEMA_ONE):
        if isinstance(schema.get(key), list):
            for i, v in enumerate(schema[key]):
                yield from _subschemas(v, f"{at}/{key}/{i}")
        elif key in schema:
            yield from _subschemas(schema[key], f"{at}/{key}")


def _resolved(root: Any, pointer: str) -> Any:
    """The schema at JSON `pointer` ("" is the root) of `root`; None when there is none."""
    node = root
    for token in pointer.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict):
            node = node.get(token)
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return None
    return node


def _escaped(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _names(value: Any) -> list[str]:
    """The keys a `properties` object or a `required` list names."""
    if isinstance(value, dict):
        return list(value)
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def limits() -> Any:
    """Parser limits: a grammar that would take too long per token errors instead of hanging
    the worker (llguidance counts lexer "fuel" per step and caps the grammar's size). The
    initial fuel bounds what compiling one costs before its first mask: at llguidance's
    default (1,000,000) a regex like `(a{1000}){1000}` spent ~1 s and ~150 MB of lexer states
    before it failed (an audit sent a new one each request); at 100,000 it fails in ~50 ms
    holding nothing, while schemas of 2,000 properties or 3,000-value enums compile the
    same (their cost is the grammar's size, which `max_grammar_size` caps)."""
    import llguidance

    return llguidance.LLParserLimits(step_lexer_fuel=1_000_000, initial_lexer_fuel=100_000,
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
    if kind == "tool_calls":
        try:
            ToolCallSpec.parse(source)
        except ValueError as exc:
            return str(exc)

    import llguidance

    try:
        err = llguidance.LLMatcher.validate_grammar(to_llguidance(kind, source), None,
                                                    limits=limits())
    except Exception as exc:  # llguidance raises several types for a schema it cannot read
        return str(exc) or type(exc).__name__
    return "" if err.startswith("WARNING") else err


@dataclass(frozen=True)
class ToolCallSpec:
    """What a `tool_calls` grammar allows: calls to `tools` (name, parameters schema), several
    of them with `parallel`. Beside the calls, with `free`, text (instead of calls or around
    them); with `answer` (a JSON Schema), a JSON answer of that schema instead of calls; with
    neither, calls only. `free` and `answer` exclude each other."""

    tools: tuple[tuple[str, dict[str, Any]], ...]
    parallel: bool = False
    free: bool = False
    answer: dict[str, Any] | None = None

    def source(self) -> str:
        """The spec as the `grammar` string of a `tool_calls` request."""
        return json.dumps({"tools": [list(t) for t in self.tools], "parallel": self.parallel,
                           "free": self.free, "answer": self.answer})

    @classmethod
    def parse(cls, source: str) -> ToolCallSpec:
        """The spec of a `grammar` string; ValueError saying what is wrong with it."""
        spec = json.loads(source)
        if not isinstance(spec, dict) or not isinstance(spec.get("tools"), list) \
                or not spec["tools"] or not all(
                    isinstance(t, list) and len(t) == 2 and isinstance(t[0], str)
                    and isinstance(t[1], dict) for t in spec["tools"]):
            raise ValueError('must be {"tools": [[name, parameters object], ...], "parallel": '
                             'bool, "free": bool, "answer": schema or null}')
        answer = spec.get("answer")
        if answer is not None and (not isinstance(answer, dict) or spec.get("free")):
            raise ValueError("answer: must be a JSON Schema object, and not beside free")
        return cls(tuple((name, params) for name, params in spec["tools"]),
                   bool(spec.get("parallel")), bool(spec.get("free")), answer)


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
    (name, parameters schema); parameter objects are closed as in `closed_objects`.

    A tool's parameters that refer to their own root (`$ref` "#/$defs/...", "#/definitions/...",
    "#": what pydantic writes for an enum or a nested model) would point at this schema's root
    once nested under `<args_key>`: such parameters move to `$defs/tool<i>` of this schema,
    their refs re-rooted there, and the call refers to them."""
    defs: dict[str, Any] = {}
    options = []
    for i, (name, params) in enumerate(tools):
        args = closed_objects(params) or {"type": "object"}
        if _has_local_ref(args):
            key = f"tool{i}"
            defs[key] = _rerooted(args, f"#/$defs/{key}")
            args = {"$ref": f"#/$defs/{key}"}
        options.append({"type": "object", "properties": {"name": {"const": name}, args_key: args},
                        "required": ["name", args_key], "additionalProperties": False})
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return {**schema, **({"$defs": defs} if defs else {}), "x-guidance": COMPACT_JSON}


def _is_local_ref(key: str, value: Any) -> bool:
    return key == "$ref" and isinstance(value, str) and (value == "#" or value.startswith("#/"))


def _has_local_ref(schema: Any) -> bool:
    if isinstance(schema, dict):
        return any(_is_local_ref(k, v) or _has_local_ref(v) for k, v in schema.items())
    return isinstance(schema, list) and any(_has_local_ref(v) for v in schema)


def _rerooted(schema: Any, base: str) -> Any:
    """`schema` with every local `$ref` moved under `base` (a pointer such as "#/$defs/t0")."""
    if isinstance(schema, dict):
        return {k: base + v[1:] if _is_local_ref(k, v) else _rerooted(v, base)
                for k, v in schema.items()}
    if isinstance(schema, list):
        return [_rerooted(v, base) for v in schema]
    return schema


def tool_call_lark(spec: ToolCallSpec, form: str = "hermes") -> str:
    """A Lark grammar for `spec`'s calls in `form`: one call, or with `parallel` one or more.
    - `free`, Hermes: text, then any number of calls (one without `parallel`, which ends the
      answer), each after text of its own. The text before a call ends at its `<tool_call>`
      (a lazy lexeme, so `<tool_call>` in the text always opens a call), and the call must
      match a tool; with `parallel`, text may follow the last call.
    - `free`, Llama 3.1: text that does not open with `{`, or one call.
    - `answer`: the answer's JSON, or the calls (in the Llama 3.1 form, JSON that is the
      answer or a call: the parser tells them apart by the tool's name).

    Hermes parallel calls follow each other with no separator: after `</tool_call>` the model
    chooses between ending and `<tool_call>`. With a newline allowed there, a small model
    takes the newline and then repeats the same call until max_tokens. The Llama 3.1 form
    has one call per answer."""
    args_key = "parameters" if form == "llama3_json" else "arguments"
    schema = _compact(tool_call_schema(list(spec.tools), args_key))
    answer = "" if spec.answer is None else \
        f"answer: %json {_compact({**closed_objects(spec.answer), 'x-guidance': COMPACT_JSON})}\n"
    if form == "llama3_json":
        if spec.free:  # the whole answer is a call exactly when it opens with "{"
            return f"start: TEXT | call\ncall: %json {schema}\nTEXT: /\\s*([^\\s{{](?s:.*))?/\n"
        return f"start: {'answer | ' if answer else ''}call\ncall: %json {schema}\n{answer}"
    if spec.free:
        start = "start: called* TEXT" if spec.parallel else "start: TEXT | called"
        return (f"{start}\ncalled: before %json {schema} \"{TOOL_CALL_CLOSE}\"\n"
                f"before[lazy]: TEXT \"{TOOL_CALL_OPEN}\"\nTEXT: /(?s:.*)/\n")
    calls = "call+" if spec.parallel else "call"
    return (f"start: {'answer | ' if answer else ''}{calls}\n"
            f'call: "{TOOL_CALL_OPEN}" %json {schema} "{TOOL_CALL_CLOSE}"\n{answer}')


def _compact(schema: dict[str, Any]) -> str:
    return json.dumps(schema, separators=(",", ":"))
