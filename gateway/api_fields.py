"""Every request field of `/v1/chat/completions`, `/v1/completions`, `/tokenize` and
`/detokenize`: the one registry that both validation and docs/API.md's field tables come from,
so they cannot drift.

Contract:
- A field is `supported` (OpenAI's, honoured), an `extension` (ours or vLLM's, honoured),
  `limited` (OpenAI's; the values that change nothing here are accepted, any other is a 400
  naming the field, code `unsupported_value`) or `refused` (OpenAI's; any non-null value is a
  400 naming the field, code `unsupported_parameter`).
- `check_fields(body, fields)` runs before an endpoint's parser: a field the registry does not
  list is a 400 naming it (code `unknown_parameter`), so nothing is silently ignored; a field
  whose value has the wrong JSON type is a 400 naming it; then limited and refused fields
  are checked. `null` means absent, as in OpenAI's API. Bounds and shapes inside a value are
  the parsers' (gateway/openai_request.py, gateway/structured_request.py).
- `python -m gateway.api_fields` prints docs/API.md's tables; tests/unit/test_api_fields.py
  checks the file holds exactly them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import ApiError

SUPPORTED, EXTENSION, LIMITED, REFUSED = "supported", "extension", "limited", "refused"
STATUS_WORDS = {SUPPORTED: "supported", EXTENSION: "extension", LIMITED: "limited",
                REFUSED: "refused (400)"}
Check = Callable[[Any, Mapping[str, Any]], str | None]  # (value, body) -> why it is refused


@dataclass(frozen=True)
class Field:
    """One request field: its JSON types, how we treat it, and what the docs say of it."""

    name: str
    types: tuple[str, ...]  # JSON types: string, integer, number, boolean, array, object
    status: str
    doc: str
    allowed: Check | None = None  # a `limited` field's test of a value

    def type_ok(self, value: Any) -> bool:
        return json_type(value) in self.types or (
            "number" in self.types and json_type(value) == "integer")


def json_type(value: Any) -> str:
    """The JSON type word of a decoded JSON value (a bool is not an integer)."""
    if isinstance(value, bool):
        return "boolean"
    return {int: "integer", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(value), type(value).__name__)


def only(*values: Any, why: str) -> Check:
    """A `limited` field's check: the value must be one of `values`."""
    def check(value: Any, body: Mapping[str, Any]) -> str | None:
        if any(value == v and type(value) is type(v) for v in values):
            return None
        shown = ", ".join(json.dumps(v) for v in values)  # JSON's words: false, not False
        return f"only {shown} is accepted here ({why})"
    check.values = values  # type: ignore[attr-defined]  # gateway/openapi.py's enum
    return check


def _best_of(value: Any, body: Mapping[str, Any]) -> str | None:
    n = body.get("n") or 1
    if value == n:
        return None
    return f"only best_of equal to n ({n}) is accepted: answers are not ranked server-side"


STR, INT, NUM, BOOL, ARR, OBJ = "string", "integer", "number", "boolean", "array", "object"
_TRACE = "recorded on the request's trace"
_TRUNCATE = ("vLLM's: keep the prompt's last this many tokens (a positive integer, at most the "
             "model's context), or -1 for as many as fit beside `max_tokens`; `usage` counts "
             "the tokens kept")


def _no_stop_beside(kind: str) -> str:
    """Where `stop` and `stop_token_ids` are refused (gateway/openai_request.py's
    `_check_stops`)."""
    if kind == "completion":
        return "not with structured output (it would cut the answer short of its grammar)"
    return ("not with structured output, nor with tools unless `tool_choice` is `none` (it "
            "would cut the JSON or the call short)")


def _common(kind: str) -> list[Field]:
    """Fields both endpoints share, in OpenAI's terms."""
    return [
        Field("model", (STR,), SUPPORTED, "a model with a live worker (`GET /v1/models`)"),
        Field("stream", (BOOL,), SUPPORTED, "server-sent events, ending with `data: [DONE]`"),
        Field("stream_options", (OBJ,), SUPPORTED,
              "`include_usage`; `include_obfuscation` accepted (no obfuscation is sent); "
              "only with `stream: true`"),
        Field("temperature", (NUM,), SUPPORTED, "[0, 2]; 0 is greedy"),
        Field("top_p", (NUM,), SUPPORTED, "(0, 1]"),
        Field("n", (INT,), SUPPORTED, "[1, 128] choices, sharing the prompt's KV blocks"),
        Field("seed", (INT,), SUPPORTED, "noise of the request's own, whatever else runs; "
              "its tokens repeat where its logits do (a batch of other shapes may round "
              "bfloat16 logits apart)"),
        Field("stop", (STR, ARR), SUPPORTED, f"a string or up to 16; {_no_stop_beside(kind)}"),
        Field("logit_bias", (OBJ,), SUPPORTED,
              "token id → bias in [-100, 100], added to the logits before sampling; ids "
              "outside the vocabulary are a 400"),
        Field("frequency_penalty", (NUM,), SUPPORTED,
              "[-2, 2]: each generated token's logit lowered by this times its count so far"),
        Field("presence_penalty", (NUM,), SUPPORTED,
              "[-2, 2]: each token already generated has its logit lowered by this"),
        Field("user", (STR,), SUPPORTED,
              f"a session-affinity hint for routing, and {_TRACE} (`gen_ai.request.user`)"),
        Field("max_tokens", (INT,), SUPPORTED,
              "at least 1; over the tenant's cap a 400 (or clamped, if the tenant says so)"
              + ("; default 16" if kind == "completion" else
                 "; default: the rest of the context")),
    ]


def _extensions(kind: str) -> list[Field]:
    out = [
        Field("top_k", (INT,), EXTENSION, "-1 (off) or a positive integer"),
        Field("min_p", (NUM,), EXTENSION, "vLLM's: [0, 1], 0 is off; tokens less likely than "
              "this times the likeliest one are dropped (after temperature)"),
        Field("repetition_penalty", (NUM,), EXTENSION,
              "vLLM's: [0.01, 2], 1 is off; every token seen (prompt too) has a positive logit "
              "divided by it, a negative one multiplied"),
        Field("ignore_eos", (BOOL,), EXTENSION, "generate past the end-of-sequence token"),
        Field("min_tokens", (INT,), EXTENSION, "vLLM's: at least this many tokens (at most the "
              "token limit) before an end-of-sequence or stop token, or a stop string, can end "
              "a choice; not with structured output or tools"),
        Field("include_stop_str_in_output", (BOOL,), EXTENSION,
              "vLLM's: the `stop` string or stop token (of `stop_token_ids`, or the end of "
              "sequence) that ended a choice ends its text (default false: dropped); a special "
              "token's text shows only with `skip_special_tokens` false"),
        Field("skip_special_tokens", (BOOL,), EXTENSION,
              "vLLM's: special tokens show no text (default true); false shows theirs in the "
              "text (but the token that ends the answer, unless `include_stop_str_in_output`) "
              "and in the logprob entries (that one too, as vLLM's do)"),
        Field("allowed_token_ids", (ARR,), EXTENSION,
              "vLLM's: only these token ids (inside the vocabulary) can be drawn; not with "
              "structured output, tools or `min_tokens`"),
        Field("stop_token_ids", (ARR,), EXTENSION,
              "token ids that end the answer; ids outside the vocabulary are a 400; "
              + _no_stop_beside(kind)),
        Field("priority", (INT,), EXTENSION,
              "scheduling order with auth off; with auth on the tenant's class decides"),
        Field("truncate_prompt_tokens", (INT,), EXTENSION, _TRUNCATE),
        Field("return_tokens_as_token_ids", (BOOL,), EXTENSION,
              "vLLM's: logprob entries name each token `token_id:<id>` (their `bytes` and "
              "text offsets those of that name), so the exact ids come back"),
        Field("guided_json", (OBJ, STR), EXTENSION, "vLLM's: a JSON Schema the answer follows"),
        Field("guided_regex", (STR,), EXTENSION, "vLLM's: a regex the answer matches"),
        Field("guided_choice", (ARR,), EXTENSION, "vLLM's: the answer is one of these strings"),
        Field("guided_grammar", (STR,), EXTENSION, "vLLM's: an llguidance Lark grammar"),
        Field("structured_outputs", (OBJ,), EXTENSION,
              "vLLM's newer form of `guided_*`: one of `json`, `regex`, `choice`, `grammar` "
              "or `json_object: true`"),
    ]
    if kind == "completion":
        out.append(Field("response_format", (OBJ,), EXTENSION,
                         "as on chat: `text`, `json_object`, `json_schema`"))
    return out


def _template_fields(when: str) -> list[Field]:
    """vLLM's chat-template fields (gateway/chat_template_fields.py): chat and /tokenize."""
    return [
        Field("add_generation_prompt", (BOOL,), EXTENSION, f"vLLM's: {when}end with the "
              "assistant's turn opener (default true)"),
        Field("continue_final_message", (BOOL,), EXTENSION, f"vLLM's: {when}the last message "
              "(an assistant's, with text) is left open and the answer continues it; needs "
              "`add_generation_prompt: false`"),
        Field("chat_template_kwargs", (OBJ,), EXTENSION, f"vLLM's: {when}more variables for "
              "the chat template (e.g. `enable_thinking`); `messages`, `tools`, "
              "`add_generation_prompt`, `continue_final_message`, `bos_token`, `eos_token` are "
              "the server's (a 400)"),
    ]


CHAT_FIELDS: tuple[Field, ...] = (
    *_common("chat"),
    Field("messages", (ARR,), SUPPORTED,
          "roles system, developer (as system), user, assistant (with `tool_calls`, or a "
          "`refusal` as its text), tool; text content (a string or text parts; other parts are "
          "a 400 naming them); `name` shown to the model; any other key is a 400 naming it "
          "(see \"Chat messages\")"),
    Field("max_completion_tokens", (INT,), SUPPORTED,
          "as `max_tokens`, and wins over it (a bad `max_tokens` beside it is still a 400)"),
    Field("logprobs", (BOOL,), SUPPORTED, "logprobs of the chosen tokens"),
    Field("top_logprobs", (INT,), SUPPORTED, "[0, 20] alternatives; needs `logprobs: true`"),
    Field("response_format", (OBJ,), SUPPORTED,
          "`text`, `json_object`, `json_schema`: decoding constrained by a grammar "
          "(docs/STRUCTURED.md); a schema's `name`, when given, as OpenAI's "
          "(`^[a-zA-Z0-9_-]{1,64}$`)"),
    Field("tools", (ARR,), SUPPORTED, "functions (JSON-Schema `parameters` of an object: "
          "another `type` is a 400), at most 128; a "
          "function's `strict: true` holds its calls to `parameters` under every "
          "`tool_choice` (docs/STRUCTURED.md)"),
    Field("tool_choice", (STR, OBJ), SUPPORTED, "`none`, `auto`, `required` or a named function"),
    Field("parallel_tool_calls", (BOOL,), SUPPORTED,
          "whether an answer may call several functions; only with `tools` (else a 400)"),
    Field("metadata", (OBJ,), SUPPORTED,
          f"up to 16 string pairs (keys ≤ 64 chars, values ≤ 512), {_TRACE} as "
          "`kvmesh.metadata.<key>`; answers are not stored"),
    Field("safety_identifier", (STR,), SUPPORTED, f"{_TRACE} (`kvmesh.safety_identifier`)"),
    Field("prompt_cache_key", (STR,), SUPPORTED,
          "a session-affinity hint (wins over `user`): requests sharing it go to the worker "
          "holding their prefix"),
    Field("store", (BOOL,), LIMITED, "false only: chat completions are not stored",
          only(False, why="chat completions are not stored")),
    Field("service_tier", (STR,), LIMITED, "`auto` or `default`: there is one tier",
          only("auto", "default", why="there is one tier")),
    Field("modalities", (ARR,), LIMITED, '`["text"]` only: text models',
          only(["text"], why="text models")),
    Field("prompt_cache_retention", (STR,), LIMITED,
          "`in_memory` only: the prefix cache lives in the workers' KV pools",
          only("in_memory", why="the prefix cache lives in the workers' KV pools")),
    Field("functions", (ARR,), REFUSED, "deprecated by OpenAI: use `tools`"),
    Field("function_call", (STR, OBJ), REFUSED, "deprecated by OpenAI: use `tool_choice`"),
    Field("audio", (OBJ,), REFUSED, "no audio output"),
    Field("prediction", (OBJ,), REFUSED, "no predicted outputs (speculative decoding)"),
    Field("reasoning_effort", (STR,), REFUSED, "no model here takes a reasoning budget"),
    Field("verbosity", (STR,), REFUSED, "no model here takes a verbosity setting"),
    Field("web_search_options", (OBJ,), REFUSED, "no web search"),
    Field("moderation", (OBJ,), REFUSED, "no moderation runs here"),
    Field("prompt_cache_options", (OBJ,), REFUSED, "prefix caching is automatic; no breakpoints"),
    *_extensions("chat"),
    *_template_fields(""),
)

COMPLETION_FIELDS: tuple[Field, ...] = (
    *_common("completion"),
    Field("prompt", (STR, ARR), SUPPORTED, "a string, an array of token ids, or a list of up to "
          "2048 of either, answered as one response (choice index = prompt_i * n + j)"),
    Field("logprobs", (INT,), SUPPORTED, "[0, 20]: logprobs of the chosen tokens and that many "
          "alternatives; each position's `top_logprobs` holds its chosen token too (up to "
          "`logprobs` + 1 entries, as OpenAI's)"),
    Field("best_of", (INT,), LIMITED, "equal to `n` only: answers are not ranked server-side",
          _best_of),
    Field("echo", (BOOL,), SUPPORTED, "the text starts with the prompt; with `logprobs`, the "
          "prompt tokens' logprobs too (the first `null`); `max_tokens` may then be 0"),
    Field("suffix", (STR,), REFUSED, "no fill-in-the-middle"),
    *_extensions("completion"),
)

TOKENIZE_FIELDS: tuple[Field, ...] = (
    Field("model", (STR,), SUPPORTED, "a model with a live worker"),
    Field("prompt", (STR,), SUPPORTED, "text to tokenise (or `messages`)"),
    Field("messages", (ARR,), SUPPORTED, "chat messages, through the model's chat template"),
    Field("tools", (ARR,), SUPPORTED, "with `messages` (with `prompt` a 400): functions, "
          "rendered by the chat template as on chat"),
    *_template_fields("with `messages` (with `prompt` a 400): "),
    Field("add_special_tokens", (BOOL,), SUPPORTED,
          "add the checkpoint's BOS/EOS (default false: as a generation's prompt is tokenised)"),
    Field("return_token_strs", (BOOL,), SUPPORTED, "also return each token's string"),
)

DETOKENIZE_FIELDS: tuple[Field, ...] = (
    Field("model", (STR,), SUPPORTED, "a model with a live worker"),
    Field("tokens", (ARR,), SUPPORTED, "token ids inside the vocabulary; special tokens kept"),
)

EMBEDDINGS_FIELDS: tuple[Field, ...] = (
    Field("model", (STR,), SUPPORTED, "a served model; 400 `model_not_embedding` when its "
          "workers serve no embeddings (`--pooling none`)"),
    Field("input", (STR, ARR), SUPPORTED, "a string, an array of strings, an array of token ids "
          "or an array of arrays of token ids: 1 to 2048 inputs, none empty, each at most "
          "`max_model_len - 1` tokens (else 400 `context_length_exceeded`, unless "
          "`truncate_prompt_tokens` cuts it)"),
    Field("encoding_format", (STR,), SUPPORTED, "`float` (default) or `base64` (each vector's "
          "little-endian float32 bytes)", only("float", "base64", why="OpenAI's two encodings")),
    Field("dimensions", (INT,), SUPPORTED, "keep the first this many values, renormalised; 1 "
          "to the model's hidden size"),
    Field("user", (STR,), SUPPORTED, "a session hint for routing, like `x-kvmesh-session`"),
    Field("truncate_prompt_tokens", (INT,), EXTENSION,
          "vLLM's: keep each input's last this many tokens (a positive integer, at most the "
          "model's context less one, an input's limit), or -1 for as many as fit"),
)

ENDPOINT_FIELDS = {"/v1/chat/completions": CHAT_FIELDS, "/v1/completions": COMPLETION_FIELDS,
                   "/v1/embeddings": EMBEDDINGS_FIELDS, "/tokenize": TOKENIZE_FIELDS,
                   "/detokenize": DETOKENIZE_FIELDS}


def check_fields(body: Mapping[str, Any], fields: tuple[Field, ...]) -> None:
    """Raise a 400 naming the first field of `body` that is unknown, of the wrong type,
    refused, or limited to values it does not hold (see the module contract)."""
    by_name = _index(fields)
    for name, value in body.items():
        f = by_name.get(name)
        if f is None:
            raise ApiError(400, f"{name}: unknown field (docs/API.md lists the fields)",
                           param=name, code="unknown_parameter")
        if value is None:
            continue
        if not f.type_ok(value):
            want = " or ".join(_ARTICLE[t] for t in f.types)
            raise ApiError(400, f"{name}: must be {want}, got {json_type(value)}",
                           param=name, code="invalid_type")
        if f.status == REFUSED:
            raise ApiError(400, f"{name}: not supported ({f.doc})", param=name,
                           code="unsupported_parameter")
        if f.allowed is not None and (why := f.allowed(value, body)):
            raise ApiError(400, f"{name}: {why}", param=name, code="unsupported_value")


_ARTICLE = {STR: "a string", INT: "an integer", NUM: "a number", BOOL: "a boolean",
            ARR: "an array", OBJ: "an object"}
_INDEX: dict[int, dict[str, Field]] = {}


def _index(fields: tuple[Field, ...]) -> dict[str, Field]:
    got = _INDEX.get(id(fields))
    if got is None:
        got = _INDEX[id(fields)] = {f.name: f for f in fields}
    return got


def markdown_table(fields: tuple[Field, ...]) -> str:
    """docs/API.md's table of one endpoint: OpenAI's fields first, then the extensions."""
    order = {SUPPORTED: 0, LIMITED: 1, REFUSED: 2, EXTENSION: 3}
    rows = sorted(fields, key=lambda f: (order[f.status], f.name))
    lines = ["| field | type | status | what it does here |", "|---|---|---|---|"]
    lines += [f"| `{f.name}` | {' or '.join(f.types)} | {STATUS_WORDS[f.status]} | {f.doc} |"
              for f in rows]
    return "\n".join(lines)


def main() -> int:
    for path, fields in ENDPOINT_FIELDS.items():
        print(f"<!-- fields: {path} -->\n{markdown_table(fields)}\n<!-- /fields -->\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
