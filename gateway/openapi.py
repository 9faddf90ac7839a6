"""The gateway's OpenAPI 3.0 document, served at `GET /openapi.json`.

It is written from the validators (`gateway/openai_request.py`, `completion_prompts.py`,
`embeddings_request.py`, `responses_request.py`, `tokenize_routes.py`) and must stay in step
with them (a Responses input item is only described: docs/API.md has its shapes): every bound
here is the bound the validator enforces (tests/fuzz/test_openapi_fuzz.py fuzzes a live
gateway against this document, and tests/fuzz/test_validators_hypothesis.py checks that bodies
valid by this document pass the validators). Fields without a hand-written
schema here come from the field registry (gateway/api_fields.py): its types, and the values a
limited field accepts. Refused and unknown fields are not in the document
(`additionalProperties: false`): the gateway answers them with a 400 naming them.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.api_fields import CHAT_FIELDS, COMPLETION_FIELDS, REFUSED, TOKENIZE_FIELDS, Field
from gateway.completion_prompts import MAX_PROMPTS

INT64 = {"type": "integer", "minimum": -(1 << 63), "maximum": (1 << 63) - 1}


def _int(lo: int | None = None, hi: int | None = None) -> dict[str, Any]:
    out = dict(INT64)
    if lo is not None:
        out["minimum"] = lo
    if hi is not None:
        out["maximum"] = hi
    return out


_NULL = {"type": "string", "nullable": True, "enum": [None], "description": "null: absent"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` or null. OpenAPI 3.0's `nullable` counts only beside `type`: a schema without
    one (`oneOf`, `enum`) gets null as one more alternative."""
    if "type" in schema:
        return {**schema, "nullable": True}
    if "oneOf" in schema:
        return {**schema, "oneOf": [*schema["oneOf"], _NULL]}
    return {"oneOf": [schema, _NULL]}


_STOP = _nullable({
    "oneOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "maxItems": 16, "items": {"type": "string", "minLength": 1}},
    ],
})

_STREAM_OPTIONS = _nullable({"type": "object", "additionalProperties": False, "properties": {
    "include_usage": _nullable({"type": "boolean"}),
    "include_obfuscation": _nullable({"type": "boolean"})}})

_TAIL = _nullable({"oneOf": [{"type": "integer", "enum": [-1]}, _int(1)],
                   "description": "vLLM's: keep the prompt's last this many tokens; -1: as "
                                  "many as fit"})
_COMMON: dict[str, Any] = {
    "model": {"type": "string", "minLength": 1},
    "stream": _nullable({"type": "boolean"}),
    "temperature": _nullable({"type": "number", "minimum": 0, "maximum": 2}),
    "top_p": _nullable({"type": "number", "minimum": 0, "maximum": 1, "exclusiveMinimum": True}),
    "top_k": _nullable({"oneOf": [{"type": "integer", "enum": [-1]}, _int(1)]}),
    "min_p": _nullable({"type": "number", "minimum": 0, "maximum": 1}),
    "min_tokens": _nullable(_int(0)),
    "presence_penalty": _nullable({"type": "number", "minimum": -2, "maximum": 2}),
    "frequency_penalty": _nullable({"type": "number", "minimum": -2, "maximum": 2}),
    "repetition_penalty": _nullable({"type": "number", "minimum": 0.01, "maximum": 2}),
    "seed": _nullable(_int()),
    "n": _nullable(_int(1, 128)),
    "stop": _STOP,
    "stop_token_ids": _nullable({"type": "array", "items": _int(0)}),
    "allowed_token_ids": _nullable({"type": "array", "minItems": 1, "items": _int(0)}),
    "ignore_eos": _nullable({"type": "boolean"}),
    "priority": _nullable(_int()),
    "truncate_prompt_tokens": _TAIL,
    "user": _nullable({"type": "string"}),
    "logit_bias": _nullable({"type": "object", "maxProperties": 1024, "additionalProperties": {
        "type": "number", "minimum": -100, "maximum": 100},
        "description": "token id (a string of digits) -> bias"}),
    "max_tokens": _nullable(_int(1)),
}

_SCHEMA_OBJECT = {"type": "object", "description": "a JSON Schema; compiled at once, 400 "
                  "naming the field when it does not compile"}
_RESPONSE_FORMAT = _nullable({
    "type": "object",
    "required": ["type"],
    "additionalProperties": False,
    "properties": {
        "type": {"type": "string", "enum": ["text", "json_object", "json_schema"]},
        "json_schema": {"type": "object", "additionalProperties": False, "properties": {
            "name": {"type": "string"}, "description": {"type": "string"},
            "strict": _nullable({"type": "boolean"}), "schema": _SCHEMA_OBJECT}},
    },
    "description": "json_schema only with (and required by) type json_schema; see "
                   "docs/STRUCTURED.md",
})
_METADATA = _nullable({"type": "object", "maxProperties": 16,
                       "additionalProperties": {"type": "string", "maxLength": 512}})
_GUIDED: dict[str, Any] = {
    "response_format": _RESPONSE_FORMAT,
    "guided_json": _nullable({"oneOf": [_SCHEMA_OBJECT, {"type": "string"}]}),
    "guided_regex": _nullable({"type": "string"}),
    "guided_choice": _nullable({"type": "array", "minItems": 1, "items": {"type": "string"}}),
    "guided_grammar": _nullable({"type": "string", "description": "llguidance Lark"}),
    "structured_outputs": _nullable({
        "type": "object", "additionalProperties": False,
        "description": "one of json, regex, choice, grammar or json_object: true",
        "properties": {"json": {"oneOf": [{"type": "object"}, {"type": "string"}]},
                       "regex": {"type": "string"},
                       "choice": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                       "grammar": {"type": "string"}, "json_object": {"type": "boolean"}}}),
}
_TOOL = {
    "type": "object",
    "required": ["type", "function"],
    "additionalProperties": False,
    "properties": {
        "type": {"type": "string", "enum": ["function"]},
        "function": {"type": "object", "required": ["name"], "additionalProperties": False,
                     "properties": {
                         "name": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"},
                         "description": _nullable({"type": "string"}),
                         "parameters": _nullable(_SCHEMA_OBJECT),
                         "strict": _nullable({"type": "boolean"})}},
    },
}
_TOOL_CALL = {
    "type": "object",
    "required": ["id", "function"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "minLength": 1},
        "type": _nullable({"type": "string", "enum": ["function"]}),
        "index": _nullable({"type": "integer"}),
        "function": {"type": "object", "required": ["name"], "additionalProperties": False,
                     "properties": {"name": {"type": "string"},
                                    "arguments": _nullable({"type": "string"}),
                                    "parsed_arguments": {"description": "the openai SDK's "
                                                         "parse(); ignored"}}},
    },
    "description": "ids unique within the turn",
}

_TEXT_PART = {
    "type": "object",
    "required": ["type", "text"],
    "additionalProperties": False,
    "properties": {"type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}},
}

_CONTENT = {"oneOf": [{"type": "string"}, {"type": "array", "items": _TEXT_PART}]}
_NAME = _nullable({"type": "string", "minLength": 1})
_ONLY_NULL = {**_NULL, "description": "only null (an echoed answer's)"}


def _role(roles: tuple[str, ...], required: tuple[str, ...],
          properties: dict[str, Any]) -> dict[str, Any]:
    """The message schema of `roles`."""
    return {"type": "object", "required": ["role", *required], "additionalProperties": False,
            "properties": {"role": {"type": "string", "enum": list(roles)}, **properties}}


_MESSAGE = {
    "oneOf": [
        _role(("system", "developer", "user"), ("content",),
              {"content": _CONTENT, "name": _NAME}),
        _role(("assistant",), (), {
            "content": _nullable(_CONTENT), "name": _NAME,
            "tool_calls": _nullable({"type": "array", "items": _TOOL_CALL}),
            "refusal": _nullable({"type": "string"}),
            "reasoning_content": _nullable({"type": "string"}),
            "annotations": _nullable({"type": "array", "maxItems": 0}),
            "audio": _ONLY_NULL, "function_call": _ONLY_NULL,
            "parsed": {"description": "the openai SDK's parse(); ignored"}}),
        _role(("tool",), ("content", "tool_call_id"), {
            "content": _CONTENT, "tool_call_id": {"type": "string"}, "name": _NAME}),
    ],
    "description": "an assistant message needs content, tool_calls or a refusal (not content "
                   "and a refusal); a tool message answers a call of the assistant message "
                   "before it, and each call is answered; developer is system",
}

def _from_registry(fields: tuple[Field, ...], written: dict[str, Any]) -> dict[str, Any]:
    """`written` plus a schema for every registry field it lacks, refused ones left out."""
    out = dict(written)
    for f in fields:
        if f.name in out or f.status == REFUSED:
            continue
        values = getattr(f.allowed, "values", None)
        schema: dict[str, Any] = {"enum": list(values)} if values is not None else \
            {"oneOf": [{"type": t} for t in f.types]} if len(f.types) > 1 else {"type": f.types[0]}
        out[f.name] = _nullable({**schema, "description": f.doc})
    return out


CHAT_REQUEST = {
    "type": "object",
    "required": ["model", "messages"],
    "additionalProperties": False,
    "properties": _from_registry(CHAT_FIELDS, {
        **_COMMON,
        "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
        "max_completion_tokens": _nullable(_int(1)),
        "logprobs": _nullable({"type": "boolean"}),
        "top_logprobs": _nullable(_int(0, 20)),
        "stream_options": _STREAM_OPTIONS,
        **_GUIDED,
        "tools": _nullable({"type": "array", "minItems": 1, "maxItems": 128, "items": _TOOL}),
        "tool_choice": _nullable({"oneOf": [
            {"type": "string", "enum": ["none", "auto", "required"]},
            {"type": "object", "required": ["type", "function"], "additionalProperties": False,
             "properties": {
                 "type": {"type": "string", "enum": ["function"]},
                 "function": {"type": "object", "required": ["name"],
                              "additionalProperties": False,
                              "properties": {"name": {"type": "string"}}}}}]}),
        "parallel_tool_calls": _nullable({"type": "boolean"}),
        "metadata": _METADATA,
    }),
    "description": "stream_options only with stream true; top_logprobs only with logprobs true; "
                   "tool_choice only with tools (a named one must be among them); at most one "
                   "of response_format (not text), guided_* and structured_outputs; "
                   "min_tokens at most max_completion_tokens (or max_tokens), and not with "
                   "those or tools (nor allowed_token_ids, nor min_tokens beside it); "
                   "stop and stop_token_ids not with those, nor with tools unless tool_choice "
                   "is none; continue_final_message needs add_generation_prompt false and a "
                   "last assistant message with text.",
}

_PROMPT = {"type": "string", "minLength": 1}
_TOKENS = {"type": "array", "minItems": 1, "items": _int(0)}
COMPLETION_REQUEST = {
    "type": "object",
    "required": ["model", "prompt"],
    "additionalProperties": False,
    "properties": _from_registry(COMPLETION_FIELDS, {
        **_COMMON,
        "prompt": {
            "oneOf": [
                _PROMPT,
                _TOKENS,
                {"type": "array", "minItems": 1, "maxItems": MAX_PROMPTS,
                 "items": {"oneOf": [_PROMPT, _TOKENS]}},
            ]
        },
        "max_tokens": _nullable(_int(0)),
        "logprobs": _nullable(_int(0, 20)),
        "echo": _nullable({"type": "boolean"}),
        **_GUIDED,
        "stream_options": _STREAM_OPTIONS,
    }),
    "description": "stream_options only with stream true. max_tokens defaults to 16; 0 only "
                   "with echo; min_tokens at most max_tokens, and not with guided_*, "
                   "structured_outputs or response_format (nor allowed_token_ids, nor "
                   "min_tokens beside it); stop and stop_token_ids not with those. A list of "
                   "prompts is answered as one response (choice index = prompt_i * n + j). "
                   "suffix is refused.",
}

_TOKEN = _int(0, (1 << 31) - 1)
EMBEDDINGS_REQUEST = {
    "type": "object",
    "required": ["model", "input"],
    "additionalProperties": False,
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "input": {"oneOf": [
            {"type": "string", "minLength": 1},
            {"type": "array", "minItems": 1, "maxItems": 2048,
             "items": {"type": "string", "minLength": 1}},
            {"type": "array", "minItems": 1, "items": _TOKEN},
            {"type": "array", "minItems": 1, "maxItems": 2048,
             "items": {"type": "array", "minItems": 1, "items": _TOKEN}},
        ]},
        "encoding_format": _nullable({"type": "string", "enum": ["float", "base64"]}),
        "dimensions": _nullable(_int(1, (1 << 31) - 1)),
        "user": _nullable({"type": "string"}),
        "truncate_prompt_tokens": _TAIL,
    },
    "description": "every other field is refused (400 naming it); dimensions over the model's "
                   "hidden size is a 400 from the worker; docs/API.md, Embeddings.",
}

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": "string", "nullable": True},
                "code": {"type": "string", "nullable": True},
            },
        }
    },
}

_ERR = {
    "description": "error, OpenAI shape",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_RETRY = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
_GENERATION_ERRORS = {
    "400": {**_ERR, "description": "bad JSON, a bad field (param names it), or a prompt (plus "
                   "max_tokens) longer than the context (code context_length_exceeded)"},
    "401": {**_ERR, "description": "missing or unknown API key"},
    "404": {**_ERR, "description": "unknown model, or one outside the key's scopes (the same "
                   "answer)"},
    "413": {**_ERR, "description": "body or prompt too large"},
    "429": {**_ERR, "description": "rate limit or quota", "headers": _RETRY},
    "502": {**_ERR, "description": "the worker died"},
    "503": {**_ERR, "description": "no worker, overloaded or auth down", "headers": _RETRY},
    "504": {**_ERR, "description": "the router or worker timed out"},
}


def _generation(schema_ref: str, summary: str, stream: bool = True) -> dict[str, Any]:
    ok: dict[str, Any] = {
        "description": "the answer: JSON, or SSE (`data: {...}` events, then `data: [DONE]`) "
                       "when stream is true",
        "content": {"application/json": {"schema": {"type": "object"}},
                    "text/event-stream": {"schema": {"type": "string"}}},
    }
    if not stream:
        ok = {"description": "the answer, JSON",
              "content": {"application/json": {"schema": {"type": "object"}}}}
    return {
        "post": {
            "summary": summary,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}
                },
            },
            "responses": {
                "200": ok,
                **_GENERATION_ERRORS,
            },
        }
    }


_RESPONSE_PATH = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
_RESPONSE_TOOL = {
    "type": "object", "required": ["type", "name"], "additionalProperties": False,
    "properties": {"type": {"type": "string", "enum": ["function"]},
                   "name": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"},
                   "description": _nullable({"type": "string"}),
                   "parameters": _nullable(_SCHEMA_OBJECT),
                   "strict": _nullable({"type": "boolean"})}}
_ITEM = {"type": "object", "description": "a message (`role`, `content`: a string or parts), a "
         "`function_call` or a `function_call_output` item, as OpenAI's (docs/API.md, "
         "Responses)"}
RESPONSES_REQUEST = {
    "type": "object", "required": ["model", "input"], "additionalProperties": False,
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "input": {"oneOf": [{"type": "string"},
                            {"type": "array", "minItems": 1, "items": _ITEM}]},
        "instructions": _nullable({"type": "string"}),
        "previous_response_id": _nullable({"type": "string"}),
        "conversation": _nullable({"oneOf": [
            {"type": "string", "minLength": 1},
            {"type": "object", "required": ["id"], "additionalProperties": False,
             "properties": {"id": {"type": "string", "minLength": 1}}}]}),
        "store": _nullable({"type": "boolean"}), "stream": _nullable({"type": "boolean"}),
        "stream_options": _nullable({"type": "object", "additionalProperties": False,
                                     "properties": {"include_obfuscation": _nullable(
                                         {"type": "boolean", "enum": [False]})}}),
        "max_output_tokens": _nullable(_int(1)),
        "temperature": _COMMON["temperature"], "top_p": _COMMON["top_p"],
        "metadata": _METADATA,
        "user": _nullable({"type": "string"}),
        "prompt_cache_key": _nullable({"type": "string"}),
        "safety_identifier": _nullable({"type": "string"}),
        "text": _nullable({"type": "object", "additionalProperties": False, "properties": {
            "format": _nullable({"type": "object", "required": ["type"], "properties": {
                "type": {"type": "string", "enum": ["text", "json_object", "json_schema"]}}}),
            "verbosity": _nullable({"type": "string", "enum": ["medium"]})}}),
        "tools": _nullable({"type": "array", "maxItems": 128, "items": _RESPONSE_TOOL}),
        "tool_choice": _nullable({"oneOf": [
            {"type": "string", "enum": ["none", "auto", "required"]},
            {"type": "object", "required": ["type", "name"], "additionalProperties": False,
             "properties": {"type": {"type": "string", "enum": ["function"]},
                            "name": {"type": "string"}}}]}),
        "parallel_tool_calls": _nullable({"type": "boolean"}),
        "include": _nullable({"type": "array", "items": {
            "type": "string", "enum": ["message.output_text.logprobs"]}}),
        "top_logprobs": _nullable(_int(0, 20)),
        "truncation": _nullable({"type": "string", "enum": ["auto", "disabled"]}),
        "background": _nullable({"type": "boolean"}),
        "service_tier": _nullable({"type": "string", "enum": ["auto", "default"]}),
        "max_tool_calls": _nullable(_int(1)),
        "prompt_cache_retention": _nullable({"type": "string", "enum": ["in_memory"]}),
        **{name: _ONLY_NULL for name in (
            "prompt", "reasoning", "access_programs", "background_options",
            "context_management", "image", "moderation", "prompt_cache_options")},
    },
    "description": "docs/API.md, Responses: top_logprobs above 0 needs include naming the "
                   "logprobs; a json_schema text.format needs name and schema; calls and "
                   "their outputs pair up over the stored history and input; background "
                   "needs store; conversation (a conversation the tenant holds, else 404) "
                   "not with previous_response_id",
}

INPUT_TOKENS_REQUEST = {  # gateway/responses_input_tokens.py `FIELDS`
    **RESPONSES_REQUEST,
    "properties": {**{name: RESPONSES_REQUEST["properties"][name] for name in (
        "model", "input", "instructions", "previous_response_id", "conversation", "text",
        "tools", "tool_choice", "parallel_tool_calls", "truncation", "reasoning")},
        "personality": _ONLY_NULL},
    "description": "docs/API.md, Counting input tokens: validated as a ResponsesRequest",
}


def _responses_paths() -> dict[str, Any]:
    """`/v1/responses` and its stored responses' routes."""
    json_ok = {"description": "ok", "content": {"application/json": {"schema": {
        "type": "object"}}}}
    by_id = {c: _GENERATION_ERRORS[c] for c in ("400", "401", "404", "503")}
    return {
        "/v1/responses": {"post": {**_generation("ResponsesRequest", "a Response")["post"]}},
        "/v1/responses/{id}": {
            "get": {"summary": "a stored Response; with stream=true, a background stream's "
                               "events again, from starting_after on",
                    "parameters": [*_RESPONSE_PATH,
                                   {"name": "stream", "in": "query", "schema": {
                                       "type": "string", "enum": ["true", "false"]}},
                                   {"name": "starting_after", "in": "query",
                                    "schema": _int(0)},
                                   {"name": "include_obfuscation", "in": "query", "schema": {
                                       "type": "string", "enum": ["false"]}}],
                    "responses": {"200": {**json_ok, "content": {
                        **json_ok["content"],
                        "text/event-stream": {"schema": {"type": "string"}}}}, **by_id}},
            "delete": {"summary": "delete a stored Response", "parameters": _RESPONSE_PATH,
                       "responses": {"200": json_ok, **by_id}}},
        "/v1/responses/{id}/input_items": {"get": {
            "summary": "a stored Response's input items", "responses": {"200": json_ok,
                                                                         **by_id},
            "parameters": [*_RESPONSE_PATH,
                           {"name": "order", "in": "query", "schema": {
                               "type": "string", "enum": ["asc", "desc"]}},
                           {"name": "limit", "in": "query", "schema": _int(1, 100)},
                           {"name": "after", "in": "query", "schema": {"type": "string"}}]}},
        "/v1/responses/input_tokens": {"post": {
            **_generation("InputTokensRequest", "", stream=False)["post"],
            "summary": "how many input tokens a Responses request would take"}},
        "/v1/responses/{id}/cancel": {"post": {
            "summary": "cancel a background Response: it, cancelled or as it finished first",
            "parameters": _RESPONSE_PATH, "responses": {"200": json_ok, **by_id}}},
    }


_CONVERSATION_PATH = [{"name": "id", "in": "path", "required": True,
                       "schema": {"type": "string"}}]
_ITEM_PATH = [*_CONVERSATION_PATH, {"name": "item_id", "in": "path", "required": True,
                                    "schema": {"type": "string"}}]
_CONVERSATION_ITEMS = {"type": "array", "maxItems": 20, "items": _ITEM}
_INCLUDE = {"name": "include", "in": "query", "schema": {"type": "string", "enum": [""]},
            "description": "refused unless empty: items have nothing more to include"}
CONVERSATION_CREATE = {
    "type": "object", "additionalProperties": False,
    "properties": {"items": _nullable(_CONVERSATION_ITEMS), "metadata": _METADATA,
                   "safety_identifier": _nullable({"type": "string"})},
}
CONVERSATION_UPDATE = {"type": "object", "required": ["metadata"],
                       "additionalProperties": False, "properties": {"metadata": _METADATA}}
CONVERSATION_ITEMS_CREATE = {
    "type": "object", "required": ["items"], "additionalProperties": False,
    "properties": {"items": {**_CONVERSATION_ITEMS, "minItems": 1}},
}


def _conversations_paths() -> dict[str, Any]:
    """`/v1/conversations` and its items (gateway/conversations_api.py)."""
    json_ok = {"description": "ok", "content": {"application/json": {"schema": {
        "type": "object"}}}}
    codes = {c: _GENERATION_ERRORS[c] for c in ("400", "401", "404", "413", "503")}

    def body(ref: str) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{ref}"}}}}

    def op(summary: str, params: list[dict[str, Any]], ref: str | None = None
           ) -> dict[str, Any]:
        out = {"summary": summary, "parameters": params,
               "responses": {"200": json_ok, **codes}}
        return {**out, "requestBody": body(ref)} if ref else out
    return {
        "/v1/conversations": {"post": op("create a Conversation", [], "ConversationCreate")},
        "/v1/conversations/{id}": {
            "get": op("a Conversation", _CONVERSATION_PATH),
            "post": op("replace a Conversation's metadata", _CONVERSATION_PATH,
                       "ConversationUpdate"),
            "delete": op("delete a Conversation and its items", _CONVERSATION_PATH)},
        "/v1/conversations/{id}/items": {
            "get": op("a page of a Conversation's items", [
                *_CONVERSATION_PATH, _INCLUDE,
                {"name": "order", "in": "query", "schema": {
                    "type": "string", "enum": ["asc", "desc"]}},
                {"name": "limit", "in": "query", "schema": _int(1, 100)},
                {"name": "after", "in": "query", "schema": {"type": "string"}}]),
            "post": op("append items to a Conversation: the list of those added",
                       [*_CONVERSATION_PATH, _INCLUDE], "ConversationItemsCreate")},
        "/v1/conversations/{id}/items/{item_id}": {
            "get": op("one item of a Conversation", [*_ITEM_PATH, _INCLUDE]),
            "delete": op("delete one item: the Conversation", _ITEM_PATH)},
    }


TOKENIZE_REQUEST = {
    "type": "object", "required": ["model"], "additionalProperties": False,
    "properties": _from_registry(TOKENIZE_FIELDS, {
        "model": {"type": "string", "minLength": 1}, "messages": _nullable(
            {"type": "array", "minItems": 1, "items": _MESSAGE}),
        "tools": _nullable({"type": "array", "minItems": 1, "maxItems": 128, "items": _TOOL})}),
    "description": "exactly one of prompt and messages",
}
DETOKENIZE_REQUEST = {
    "type": "object", "required": ["model", "tokens"], "additionalProperties": False,
    "properties": {"model": {"type": "string", "minLength": 1},
                   "tokens": {"type": "array", "items": _int(0)}},
}


def _tokenize(schema_ref: str, summary: str) -> dict[str, Any]:
    codes = {c: _GENERATION_ERRORS[c] for c in ("400", "401", "404", "413", "429", "503", "504")}
    return {"post": {
        "summary": summary,
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}},
        "responses": {"200": {"description": "ok", "content": {
            "application/json": {"schema": {"type": "object"}}}}, **codes}}}


def _get(summary: str, codes: tuple[str, ...] = ()) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {
            "description": "ok",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    }
    for code in codes:
        responses[code] = _ERR
    return {"get": {"summary": summary, "responses": responses}}


DOCUMENT: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "kvmesh gateway",
        "version": "1",
        "description": "OpenAI-compatible completions over the kvmesh mesh.",
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "ChatCompletionRequest": CHAT_REQUEST,
            "CompletionRequest": COMPLETION_REQUEST,
            "TokenizeRequest": TOKENIZE_REQUEST,
            "DetokenizeRequest": DETOKENIZE_REQUEST,
            "EmbeddingsRequest": EMBEDDINGS_REQUEST,
            "ResponsesRequest": RESPONSES_REQUEST,
            "InputTokensRequest": INPUT_TOKENS_REQUEST,
            "ConversationCreate": CONVERSATION_CREATE,
            "ConversationUpdate": CONVERSATION_UPDATE,
            "ConversationItemsCreate": CONVERSATION_ITEMS_CREATE,
            "Error": ERROR,
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/v1/chat/completions": _generation("ChatCompletionRequest", "chat completion"),
        "/v1/completions": _generation("CompletionRequest", "text completion"),
        "/v1/embeddings": _generation("EmbeddingsRequest", "embeddings: one vector per input",
                                      stream=False),
        "/v1/models": _get("models with a live worker", ("400", "401", "503")),
        "/v1/models/{model}": {"get": {**_get("one model", ("400", "401", "404"))["get"],
                                       "parameters": [{"name": "model", "in": "path",
                                                       "required": True,
                                                       "schema": {"type": "string"}}]}},
        **_responses_paths(),
        **_conversations_paths(),
        "/tokenize": _tokenize("TokenizeRequest", "token ids of a prompt (vLLM's shape)"),
        "/detokenize": _tokenize("DetokenizeRequest", "text of token ids (vLLM's shape)"),
        "/health": {
            "get": {
                "summary": "liveness",
                "security": [],
                "responses": {"200": {"description": "the process runs"}},
            }
        },
        "/ready": {
            "get": {
                "summary": "readiness",
                "security": [],
                "responses": {
                    "200": {"description": "nats, a router and a worker answer"},
                    "503": {"description": "not ready"},
                },
            }
        },
    },
}


async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(DOCUMENT)
