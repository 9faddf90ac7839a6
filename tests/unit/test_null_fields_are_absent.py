"""docs/API.md: "`null` is the same as leaving a field out". For every field of chat,
completions, embeddings and the Responses API, a body with `field: null` parses to exactly the
request the body without it does (the audit found completions' `max_tokens: null` generating
to the end of the context where leaving it out gives OpenAI's default of 16)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.api_fields import CHAT_FIELDS, COMPLETION_FIELDS, EMBEDDINGS_FIELDS
from gateway.embeddings_request import parse_embeddings
from gateway.openai_request import parse_chat, parse_completion
from gateway.responses_request import SUPPORTED, parse_responses

M = "m"
CASES: list[tuple[str, Any, dict[str, Any], str]] = [
    *[("chat", parse_chat, {"model": M, "messages": [{"role": "user", "content": "hi"}]},
       f.name) for f in CHAT_FIELDS],
    *[("completion", parse_completion, {"model": M, "prompt": "hi"}, f.name)
      for f in COMPLETION_FIELDS],
    *[("embeddings", parse_embeddings, {"model": M, "input": "hi"}, f.name)
      for f in EMBEDDINGS_FIELDS],
    *[("responses", parse_responses, {"model": M, "input": "hi"}, name)
      for name in sorted(SUPPORTED)],
]


@pytest.mark.parametrize(("kind", "parse", "base", "name"),
                         [c for c in CASES if c[3] not in c[2]],  # required ones: not optional
                         ids=[f"{c[0]}-{c[3]}" for c in CASES if c[3] not in c[2]])
def test_a_null_field_parses_as_one_left_out(kind: str, parse: Any, base: dict[str, Any],
                                             name: str) -> None:
    left_out, null = parse(dict(base)), parse({**base, name: None})
    if kind == "responses":  # its ids and times are minted per parse
        for req in (left_out, null):
            req.input_items = [{k: v for k, v in i.items() if k != "id"}
                               for i in req.input_items]
    assert null == left_out
