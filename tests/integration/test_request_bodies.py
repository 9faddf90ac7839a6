"""A body the gateway cannot decode is an OpenAI-shaped 400, and one too large a 413 that reads
well, from real HTTP requests to a real gateway: compressed, corrupt, oversize, chunked."""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.conftest import MODEL, Mesh

CHAT = "/v1/chat/completions"
BODY = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                   "max_tokens": 2, "temperature": 0}).encode()
LIMIT = 1 << 20  # the gateway's default max_body_bytes


def send(url: str, data: bytes | Iterator[bytes], encoding: str | None,
         ) -> tuple[int, str, dict[str, Any]]:
    """(status, content type, JSON body); an iterator is sent chunked, with no length."""
    headers = {"Content-Type": "application/json"}
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    if not isinstance(data, bytes):
        headers["Transfer-Encoding"] = "chunked"
    req = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.headers.get_content_type(), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get_content_type(), json.loads(err.read())


@pytest.mark.parametrize(("data", "encoding"), [(gzip.compress(BODY), "gzip"),
                                                (zlib.compress(BODY), "deflate")])
def test_a_compressed_body_is_served(mesh: Mesh, data: bytes, encoding: str) -> None:
    status, _, body = send(mesh.base_url + CHAT, data, encoding)
    assert status == 200, body
    assert body["choices"][0]["message"]["role"] == "assistant"


@pytest.mark.parametrize(("data", "encoding", "code"), [
    (BODY, "gzip", "invalid_body"), (b"notgzip", "gzip", "invalid_body"),
    (BODY, "deflate", "invalid_body"), (BODY, "br", "unsupported_encoding"),
    (BODY, "zstd", "unsupported_encoding"),
])
@pytest.mark.parametrize("path", [CHAT, "/tokenize"])
def test_an_undecodable_body_is_a_json_400(mesh: Mesh, path: str, data: bytes, encoding: str,
                                           code: str) -> None:
    status, ctype, body = send(mesh.base_url + path, data, encoding)
    assert (status, ctype) == (400, "application/json"), body
    assert body["error"]["code"] == code and encoding in body["error"]["message"]
    assert body["error"]["type"] == "invalid_request_error"


def test_a_body_that_inflates_past_the_limit_is_413(mesh: Mesh) -> None:
    big = json.dumps({"model": MODEL, "messages": [
        {"role": "user", "content": "x" * (6 << 20)}]}).encode()
    status, _, body = send(mesh.base_url + CHAT, gzip.compress(big), "gzip")
    assert status == 413, body
    assert body["error"]["message"] == f"request body is more than {LIMIT} bytes"
    assert body["error"]["code"] == "body_too_large"


def test_a_chunked_body_past_the_limit_is_413(mesh: Mesh) -> None:
    chunks = iter([b'{"model": "x", "prompt": "', *[b"y" * (256 << 10)] * 10, b'"}'])
    status, _, body = send(mesh.base_url + CHAT, chunks, None)
    assert status == 413, body
    assert body["error"]["message"] == f"request body is more than {LIMIT} bytes"


def test_nan_in_a_body_is_invalid_json(mesh: Mesh) -> None:
    status, _, body = send(mesh.base_url + CHAT, BODY[:-1] + b', "top_p": NaN}', None)
    assert status == 400, body
    assert body["error"]["code"] == "invalid_json" and "NaN" in body["error"]["message"]
