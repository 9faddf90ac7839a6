"""A request that fits the gateway's body limit but not the NATS server's max payload gets
HTTP 413 at once, in the OpenAI error shape, and never waits for a timeout.

Runs on a private mesh whose nats-server has a small `max_payload`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import MODEL, Mesh
from tests.integration.helpers import post
from tests.integration.private_mesh import private_mesh

MAX_PAYLOAD = 16 * 1024  # bytes; the gateway's body limit stays at its 1 MiB default


@pytest.fixture(scope="module")
def small_payload_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    logs: Path = tmp_path_factory.mktemp("payload-mesh")
    with private_mesh(logs, workers=("p",), max_payload=MAX_PAYLOAD) as (m, _nats):
        yield m


@pytest.mark.parametrize(("path", "field"), [("/v1/chat/completions", "messages"),
                                             ("/v1/completions", "prompt")])
def test_over_nats_max_payload_is_413(small_payload_mesh: Mesh, path: str, field: str) -> None:
    text = "lorem ipsum " * 4000  # ~48 KB: under the gateway's 1 MiB, over NATS' 16 KiB
    value = [{"role": "user", "content": text}] if field == "messages" else text
    body = {"model": MODEL, field: value, "max_tokens": 4}
    for stream in (False, True):
        started = time.monotonic()
        status, resp, _ = post(small_payload_mesh.base_url + path, {**body, "stream": stream},
                               timeout=30)
        elapsed = time.monotonic() - started
        assert status == 413, resp
        err = resp["error"]
        assert set(err) >= {"message", "type", "param", "code"}
        assert err["type"] == "invalid_request_error"
        assert err["code"] == "payload_too_large"
        assert "max payload" in err["message"] and str(MAX_PAYLOAD) in err["message"]
        assert elapsed < 5, f"took {elapsed:.1f}s: refused by a timeout, not a check"


def test_small_request_still_served(small_payload_mesh: Mesh) -> None:
    """The same mesh answers a request that fits: the limit is what refused the big one."""
    status, resp, _ = post(small_payload_mesh.base_url + "/v1/chat/completions", {
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
    assert status == 200, resp
    assert resp["choices"][0]["message"]["content"]
