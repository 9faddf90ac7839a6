"""docs/API.md holds exactly the field tables of the registry (gateway/api_fields.py), and the
registry covers every field of OpenAI's request types in the installed openai client."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.api_fields import (
    CHAT_FIELDS,
    COMPLETION_FIELDS,
    EMBEDDINGS_FIELDS,
    ENDPOINT_FIELDS,
    EXTENSION,
    check_fields,
    markdown_table,
)
from gateway.errors import ApiError

DOC = Path(__file__).resolve().parents[2] / "docs" / "API.md"
BLOCK = re.compile(r"<!-- fields: (\S+) -->\n(.*?)\n<!-- /fields -->", re.S)


def test_docs_api_md_holds_the_registrys_tables() -> None:
    found = dict(BLOCK.findall(DOC.read_text()))
    assert set(found) == set(ENDPOINT_FIELDS)
    for path, fields in ENDPOINT_FIELDS.items():
        assert found[path] == markdown_table(fields), (
            f"docs/API.md's table of {path} is stale: `python -m gateway.api_fields` prints it")


@pytest.mark.parametrize(("module", "kind", "fields"), [
    ("openai.types.chat.completion_create_params", "CompletionCreateParamsBase", CHAT_FIELDS),
    ("openai.types.completion_create_params", "CompletionCreateParamsBase", COMPLETION_FIELDS),
    ("openai.types.embedding_create_params", "EmbeddingCreateParams", EMBEDDINGS_FIELDS),
])
def test_every_openai_request_field_is_in_the_registry(module: str, kind: str,
                                                      fields: tuple) -> None:
    import importlib

    base = getattr(importlib.import_module(module), kind)
    openai_names = set(base.__annotations__) | ({"stream"} if fields is not EMBEDDINGS_FIELDS
                                                 else set())
    ours = {f.name for f in fields}
    assert openai_names <= ours, sorted(openai_names - ours)
    assert {f.name for f in fields if f.status == EXTENSION}.isdisjoint(openai_names)


@pytest.mark.parametrize(("body", "words"), [
    ({"store": True}, "only false is accepted"),
    ({"modalities": ["audio"]}, 'only ["text"] is accepted'),
    ({"service_tier": "flex"}, 'only "auto", "default" is accepted'),
])
def test_limited_values_are_named_in_json_words(body: dict, words: str) -> None:
    with pytest.raises(ApiError) as info:
        check_fields(body, CHAT_FIELDS)
    assert words in info.value.message
