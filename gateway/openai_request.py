"""OpenAI request bodies (chat and completions) validated into a `ParsedRequest`.

Every bad field raises `ApiError(400)` naming the field (`param`) and why. Which fields exist,
their JSON types, and which are refused or limited is gateway/api_fields.py's registry, checked
first (an unknown field is a 400 too: nothing is silently ignored). Extensions: `ignore_eos`,
`top_k`, `min_p`, `repetition_penalty`, `min_tokens`, `stop_token_ids`,
`include_stop_str_in_output`, `skip_special_tokens`, `allowed_token_ids`, `priority`,
`truncate_prompt_tokens` (applied by the router, which knows the context),
`return_tokens_as_token_ids` (applied to the chunks by gateway/app.py).
Structured output and tools (`response_format`, `guided_*`, `tools`, `tool_choice`,
`parallel_tool_calls`) are parsed in gateway/structured_request.py; `logit_bias`, session
hints and trace labels in gateway/request_extras.py; a completion's prompt or batch of
prompts, `echo` and `suffix` in gateway/completion_prompts.py.

`messages` are gateway/chat_messages.py's. `max_tokens` is checked even where
`max_completion_tokens` wins; `parallel_tool_calls` is a 400 without `tools`; `min_tokens` is
a 400 over the token limit or beside a grammar; `stop` and `stop_token_ids` are 400s beside a
grammar or tools that may be called (`_check_stops`). vLLM's template fields
(`add_generation_prompt`, `continue_final_message`, `chat_template_kwargs`) are
gateway/chat_template_fields.py's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from gateway.api_fields import CHAT_FIELDS, COMPLETION_FIELDS, check_fields, json_type
from gateway.chat_messages import check_tool_turns, parse_messages
from gateway.chat_template_fields import parse_template_options
from gateway.completion_prompts import INT_LIMIT, Prompt, parse_echo, parse_prompts
from gateway.errors import bad_field
from gateway.field_values import prompt_tail, typed
from gateway.json_body import json_object
from gateway.request_extras import parse_extras, session_hint
from gateway.structured_request import parse_grammar, parse_tools, tool_grammar
from kvmesh.wire import (
    ChatMessage,
    ChatTemplateOptions,
    GenerateRequest,
    SamplingFields,
    ToolDef,
    sampling_of,
)


@dataclass
class ParsedRequest(SamplingFields):
    """A validated request; its sampling fields (`logprobs`: how many top alternatives, None
    for none) are the wire's own, so `to_wire` copies them without naming them."""

    kind: str  # "chat" or "completion"
    model: str
    stream: bool = False
    include_usage: bool = False
    messages: list[ChatMessage] | None = None
    prompt: str | None = None
    prompt_token_ids: list[int] | None = None
    prompts: list[Prompt] | None = None  # a completions batch (2+ prompts); else None
    tenant: str = ""  # set by auth from the caller's key
    scope: str = ""  # set by auth: the tenant's name and incarnation (result-cache entries)
    key_id: str = ""  # set by auth: the caller's key (its revocation ends the request)
    session: str = ""  # session-affinity hint: the `user` field (or the x-kvmesh-session header)
    tools: list[ToolDef] | None = None
    tool_choice: str = "none"  # none, auto, required, or "function" (named by `tool_name`)
    tool_name: str | None = None
    parallel_tool_calls: bool = True
    trace_labels: dict[str, str] = field(default_factory=dict)  # span attributes: user, ...
    max_tokens_param: str = ""  # the field the client set max_tokens with ("" for a default)
    truncate: bool = False  # drop the oldest turns to fit the context (Responses' truncation)
    truncate_prompt_tokens: int | None = None  # vLLM's: keep the prompt's last tokens
    tokens_as_ids: bool = False  # vLLM's return_tokens_as_token_ids (gateway/token_ids.py)
    template: ChatTemplateOptions = field(default_factory=ChatTemplateOptions)  # chat only

    @property
    def tool_names(self) -> frozenset[str]:
        """Functions whose calls are parsed out of the answer (empty: none are)."""
        if not self.tools or self.tool_choice == "none":
            return frozenset()
        return frozenset(t.name for t in self.tools)

    def split(self) -> list[ParsedRequest]:
        """One request per prompt of a batch, else [self]."""
        if not self.prompts:
            return [self]
        return [dataclasses.replace(self, prompts=None, prompt=p if isinstance(p, str) else None,
                                    prompt_token_ids=None if isinstance(p, str) else p)
                for p in self.prompts]

    def to_wire(self, request_id: str, reply_to: str, tenant: str = "") -> GenerateRequest:
        return GenerateRequest(
            request_id=request_id, model=self.model, reply_to=reply_to, prompt=self.prompt,
            messages=self.messages, prompt_token_ids=self.prompt_token_ids,
            tenant=tenant or self.tenant, session=self.session, tools=self.tools,
            truncate=self.truncate, truncate_prompt_tokens=self.truncate_prompt_tokens,
            template=self.template, **sampling_of(self),
        )


def parse_chat(body: Any) -> ParsedRequest:
    body = json_object(body)
    check_fields(body, CHAT_FIELDS)
    req = ParsedRequest("chat", _model(body))
    _common(body, req)
    req.messages = parse_messages(body)
    check_tool_turns(req.messages)
    req.template = parse_template_options(body, req.messages)
    parse_grammar(body, req)
    if body.get("parallel_tool_calls") is not None and body.get("tools") is None:
        raise bad_field("parallel_tool_calls", "only with tools")  # as OpenAI
    req.tools, req.tool_choice, req.tool_name, req.parallel_tool_calls = parse_tools(body)
    if req.tools and (calls := tool_grammar(req.tools, req.tool_choice, req.tool_name,
                                            req.parallel_tool_calls, req.grammar_kind,
                                            req.grammar)):
        req.grammar_kind, req.grammar = "tool_calls", calls
    legacy = _opt_int(body, "max_tokens", 1)  # checked even where max_completion_tokens wins
    req.max_tokens = _opt_int(body, "max_completion_tokens", 1)
    if req.max_tokens is None:
        req.max_tokens = legacy
    req.max_tokens_param = _given(body, "max_completion_tokens", "max_tokens")
    if typed(body, "logprobs", bool, False):
        req.logprobs = _opt_int(body, "top_logprobs", 0, 20) or 0
    elif body.get("top_logprobs") is not None:
        raise bad_field("top_logprobs", "requires logprobs to be true")
    _check_token_masks(req)
    _check_stops(req)
    return req


def _check_stops(req: ParsedRequest) -> None:
    """No `stop` string nor `stop_token_ids` beside a grammar (structured output, forced or
    strict tool calls) or tools that may be called (`tool_choice` other than none): a stop
    would end the answer inside its JSON or a call, served as a whole answer (`stop`,
    `tool_calls`) whose JSON or `arguments` the client cannot parse. The grammar's end, or
    the model's, ends such an answer. An empty list is no stop."""
    if not (req.grammar_kind or req.tool_names):
        return
    for name in ("stop", "stop_token_ids"):
        if getattr(req, name):
            raise bad_field(name, "cannot be combined with structured output or tools (it "
                            "would cut the JSON or the tool call short)")


def _check_token_masks(req: ParsedRequest) -> None:
    """`min_tokens` at most the token limit when one is given (without one the worker checks
    it against the context left), and never with a grammar, which ends the answer itself;
    `allowed_token_ids` neither with a grammar nor with `min_tokens` (their masks could leave
    no token to draw)."""
    if req.max_tokens is not None and req.min_tokens > req.max_tokens:
        limit = req.max_tokens_param or "max_tokens"  # a completion's default, 16
        raise bad_field("min_tokens", f"must be at most {limit} ({req.max_tokens}), got "
                        f"{req.min_tokens}")
    if req.min_tokens and req.grammar_kind:
        raise bad_field("min_tokens", "cannot be combined with structured output or tools "
                        "(the grammar ends the answer)")
    if req.allowed_token_ids and req.grammar_kind:
        raise bad_field("allowed_token_ids", "cannot be combined with structured output or "
                        "tools (the grammar could allow none of them)")
    if req.allowed_token_ids and req.min_tokens:
        raise bad_field("min_tokens", "cannot be combined with allowed_token_ids")


def parse_completion(body: Any) -> ParsedRequest:
    body = json_object(body)
    check_fields(body, COMPLETION_FIELDS)
    req = ParsedRequest("completion", _model(body))
    _common(body, req)
    parse_prompts(body, req)
    parse_grammar(body, req)
    max_tokens = _opt_int(body, "max_tokens", 0)  # 0: with echo only (parse_echo)
    req.max_tokens = 16 if max_tokens is None else max_tokens  # OpenAI's default; null alike
    req.max_tokens_param = _given(body, "max_tokens")
    req.logprobs = _opt_int(body, "logprobs", 0, 20)
    parse_echo(body, req)
    _check_token_masks(req)
    _check_stops(req)
    return req


def _given(body: dict[str, Any], *names: str) -> str:
    """The first of `names` set (not null) in `body`, else ""."""
    return next((n for n in names if body.get(n) is not None), "")


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_field("model", "required, a non-empty string")
    return model


def _common(body: dict[str, Any], req: ParsedRequest) -> None:
    req.stream = typed(body, "stream", bool, False)
    opts = body.get("stream_options")
    if opts is not None:
        if not isinstance(opts, dict):
            raise bad_field("stream_options", "must be an object")
        if not req.stream:
            raise bad_field("stream_options", "only allowed when stream is true")
        req.include_usage = typed(opts, "include_usage", bool, False,
                                  "stream_options.include_usage")
    req.temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    req.top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    if req.top_p == 0.0:
        raise bad_field("top_p", "must be greater than 0")
    req.presence_penalty = _number(body, "presence_penalty", 0.0, -2.0, 2.0)
    req.frequency_penalty = _number(body, "frequency_penalty", 0.0, -2.0, 2.0)
    req.repetition_penalty = _number(body, "repetition_penalty", 1.0, 0.01, 2.0)
    req.min_p = _number(body, "min_p", 0.0, 0.0, 1.0)
    req.min_tokens = _opt_int(body, "min_tokens", 0) or 0
    req.top_k = typed(body, "top_k", int, -1)
    if req.top_k == 0 or req.top_k < -1:
        raise bad_field("top_k", "must be -1 (off) or a positive integer")
    req.seed = _opt_int(body, "seed")
    req.n = _opt_int(body, "n", 1, 128) or 1
    req.stop = _stop(body.get("stop"))
    ids = typed(body, "stop_token_ids", list, [])
    if any(type(t) is not int or not 0 <= t < INT_LIMIT for t in ids):
        raise bad_field("stop_token_ids", "must be a list of non-negative integers")
    req.stop_token_ids = ids
    req.allowed_token_ids = _token_ids(body, "allowed_token_ids")
    req.ignore_eos = typed(body, "ignore_eos", bool, False)
    req.include_stop_str_in_output = typed(body, "include_stop_str_in_output", bool, False)
    req.skip_special_tokens = typed(body, "skip_special_tokens", bool, True)
    req.priority = typed(body, "priority", int, 0)
    req.truncate_prompt_tokens = prompt_tail(body)
    req.tokens_as_ids = typed(body, "return_tokens_as_token_ids", bool, False)
    req.session = session_hint(body)
    req.trace_labels = parse_extras(body, req)


def _token_ids(body: dict[str, Any], name: str) -> list[int] | None:
    """A non-empty list of token ids (checked against the vocabulary at the worker), or None."""
    ids = typed(body, name, list, None)
    if ids is not None and (not ids or any(type(t) is not int or not 0 <= t < INT_LIMIT
                                           for t in ids)):
        raise bad_field(name, "must be a non-empty list of non-negative integers")
    return ids


def _stop(stop: Any) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or len(stop) > 16 \
            or not all(isinstance(s, str) and s for s in stop):
        raise bad_field("stop", "must be a non-empty string, or an array of at most 16 of them")
    return stop


def _number(body: dict[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_field(name, f"must be a number, got {json_type(value)}")
    if not lo <= value <= hi:
        raise bad_field(name, f"must be in [{lo:g}, {hi:g}], got {value}")
    return float(value)


def _opt_int(body: dict[str, Any], name: str, lo: int | None = None,
             hi: int | None = None) -> int | None:
    value = typed(body, name, int, None)
    if value is None:
        return None
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"at least {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise bad_field(name, f"must be {bounds}, got {value}")
    return value
