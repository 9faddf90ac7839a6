"""The `/v1/embeddings` validator under arbitrary bodies: each one parses into an input list the
wire can carry, or is refused with a 400 naming a field; bodies valid by the OpenAPI document
parse."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.api_fields import EMBEDDINGS_FIELDS
from gateway.embeddings_request import MAX_INPUTS, TOKEN_LIMIT, parse_embeddings
from gateway.errors import ApiError

QUICK = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(1 << 40), 1 << 40), st.floats(),
                    st.text(max_size=6))
JSON = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=10)
NAMES = [*sorted(f.name for f in EMBEDDINGS_FIELDS), "temperature", "x"]
BODIES = st.one_of(JSON, st.dictionaries(st.sampled_from(NAMES), JSON, max_size=5))


@QUICK
@given(BODIES)
def test_every_body_parses_or_is_a_400_naming_a_field(body: Any) -> None:
    try:
        req = parse_embeddings(body)
    except ApiError as err:
        assert err.status == 400
        assert err.param is not None or err.code == "invalid_json"
        return
    assert (req.texts is None) != (req.token_ids is None)
    assert 1 <= req.size <= MAX_INPUTS
    assert all(req.texts or []) and all(req.token_ids or [])
    assert all(0 <= t < TOKEN_LIMIT for ids in req.token_ids or [] for t in ids)


TOKENS = st.lists(st.integers(0, TOKEN_LIMIT - 1), min_size=1, max_size=5)
VALID_INPUT = st.one_of(st.text(min_size=1), st.lists(st.text(min_size=1), min_size=1, max_size=9),
                        TOKENS, st.lists(TOKENS, min_size=1, max_size=4))


@QUICK
@given(st.fixed_dictionaries(
    {"model": st.text(min_size=1, max_size=8), "input": VALID_INPUT},
    optional={"encoding_format": st.sampled_from(["float", "base64", None]),
              "dimensions": st.one_of(st.none(), st.integers(1, TOKEN_LIMIT - 1)),
              "user": st.one_of(st.none(), st.text(max_size=5))}))
def test_bodies_valid_by_the_openapi_document_parse(body: dict[str, Any]) -> None:
    req = parse_embeddings(body)
    assert req.model == body["model"]
    assert req.encoding_format == (body.get("encoding_format") or "float")


def test_one_token_array_is_one_input_and_strings_are_many() -> None:
    assert parse_embeddings({"model": "m", "input": [1, 2, 3]}).token_ids == [[1, 2, 3]]
    assert parse_embeddings({"model": "m", "input": "hi"}).texts == ["hi"]
    assert parse_embeddings({"model": "m", "input": ["a", "b"]}).size == 2


@pytest.mark.parametrize("field", ["temperature", "stream", "n", "input_type", "priority"])
def test_other_fields_are_refused_by_name(field: str) -> None:
    with pytest.raises(ApiError) as err:
        parse_embeddings({"model": "m", "input": "a", field: 1})
    assert err.value.status == 400 and err.value.param == field
