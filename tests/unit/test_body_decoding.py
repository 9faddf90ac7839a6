"""A request body's Content-Encoding is undone by the gateway, and every way it can fail is an
OpenAI-shaped 400 or 413 (gateway/json_body.py), never a 500."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest

from gateway.errors import ApiError
from gateway.json_body import decode, parse_json

BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
LIMIT = 1 << 20


def fails(raw: bytes, encoding: str, limit: int = LIMIT) -> ApiError:
    with pytest.raises(ApiError) as info:
        decode(raw, encoding, limit)
    return info.value


@pytest.mark.parametrize(("raw", "encoding"), [
    (gzip.compress(BODY), "gzip"), (gzip.compress(BODY), "x-gzip"),
    (zlib.compress(BODY), "deflate"), (zlib.compress(BODY)[2:-4], "deflate"),  # raw deflate
    (gzip.compress(BODY[:20]) + gzip.compress(BODY[20:]), "gzip"),  # two members
    (gzip.compress(zlib.compress(BODY)), "deflate, gzip"), (BODY, "identity"), (BODY, ""),
])
def test_supported_codings_give_the_body_back(raw: bytes, encoding: str) -> None:
    assert decode(raw, encoding, LIMIT) == BODY


@pytest.mark.parametrize(("raw", "encoding"), [
    (BODY, "gzip"), (b"notgzip", "gzip"), (BODY, "deflate"), (gzip.compress(BODY)[:-6], "gzip"),
    (gzip.compress(BODY) + b"junk", "gzip"),
])
def test_a_body_not_in_its_coding_is_invalid_body(raw: bytes, encoding: str) -> None:
    err = fails(raw, encoding)
    assert (err.status, err.code) == (400, "invalid_body")
    assert encoding in err.message


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress"])
def test_other_codings_are_unsupported_encoding(encoding: str) -> None:
    err = fails(BODY, encoding)
    assert (err.status, err.code) == (400, "unsupported_encoding")
    assert repr(encoding) in err.message


def test_more_than_two_codings_are_refused_before_any_is_undone() -> None:
    """Each coding is inflated on the gateway's event loop: 1,500 stacked gzip layers (a
    1 MB body) held it for a second a request (the security audit)."""
    raw = BODY
    for _ in range(3):
        raw = gzip.compress(raw, compresslevel=0)
    err = fails(raw, "gzip, gzip, gzip")
    assert (err.status, err.code) == (400, "unsupported_encoding")
    assert "3 codings" in err.message
    assert decode(gzip.compress(gzip.compress(BODY)), "gzip,gzip", LIMIT) == BODY


def test_inflating_past_the_limit_is_413_and_stops_there() -> None:
    bomb = gzip.compress(b" " * (50 * LIMIT))  # 50 MiB of spaces in about 50 KiB
    err = fails(bomb, "gzip")
    assert (err.status, err.code) == (413, "body_too_large")
    assert err.message == f"request body is more than {LIMIT} bytes"
    assert decode(gzip.compress(b" " * LIMIT), "gzip", LIMIT) == b" " * LIMIT  # exactly fits


@pytest.mark.parametrize("raw", [b"[NaN]", b'{"temperature": Infinity}', b"-Infinity"])
def test_nan_and_infinity_are_not_json(raw: bytes) -> None:
    with pytest.raises(ApiError) as info:
        parse_json(raw)
    assert (info.value.status, info.value.code) == (400, "invalid_json")
    assert "is not a JSON value" in info.value.message


@pytest.mark.parametrize(("raw", "param"), [
    (b'{"seed": 1180591620717411303424}', "seed"),
    (b'{"messages": [{"role": "user", "x": [1, -99999999999999999999]}]}', "messages[0].x[1]"),
    (b"99999999999999999999", None)])
def test_an_integer_past_64_bits_is_named_by_its_field(raw: bytes, param: str | None) -> None:
    with pytest.raises(ApiError) as info:
        parse_json(raw)
    assert (info.value.status, info.value.param) == (400, param)
    assert info.value.code == ("invalid_value" if param else "invalid_json")
    assert "outside the 64-bit range" in info.value.message


def test_a_field_between_2_63_and_2_64_says_its_bound() -> None:
    from gateway.openai_request import parse_chat

    with pytest.raises(ApiError) as info:
        parse_chat({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": 1 << 63})
    assert info.value.param == "max_tokens" and "below 2^63" in info.value.message
