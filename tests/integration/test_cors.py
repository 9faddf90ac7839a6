"""CORS (gateway/cors.py) on a gateway of the session's mesh started with `cors_origins`: an
allowed origin's preflight is 204 before auth, and its answers (JSON, streamed, errors) carry
the headers a browser needs; another origin, and the session's gateway (CORS off), get none."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.integration.conftest import MODEL, Mesh, start_gateway
from tests.integration.helpers import call, wait_until

APP = "https://app.example"
CHAT = "/v1/chat/completions"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
PREFLIGHT = {"Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os"}


@pytest.fixture(scope="module")
def cors_url(mesh: Mesh) -> Iterator[str]:
    gw, url = start_gateway(mesh.nats_url, mesh.logs, "gateway-cors",
                            cors_origins=f"{APP}, http://localhost:3000", auth="1")
    _ready(url)
    yield url
    gw.stop()


def _ready(url: str) -> None:
    """Once it has heard a worker (before that a generation is a 503)."""
    wait_until(lambda: call("GET", url + "/ready")[0] == 200, "the gateway is ready")


def test_an_allowed_origins_preflight_is_answered_before_auth(cors_url: str) -> None:
    r = httpx.options(cors_url + CHAT, headers={"Origin": APP, **PREFLIGHT})
    assert r.status_code == 204, r.text
    assert r.headers["access-control-allow-origin"] == APP
    assert "POST" in r.headers["access-control-allow-methods"]
    assert r.headers["access-control-allow-headers"] == PREFLIGHT[
        "Access-Control-Request-Headers"]
    assert int(r.headers["access-control-max-age"]) > 0
    assert "access-control-allow-credentials" not in r.headers


def test_answers_to_an_allowed_origin_carry_the_headers(mesh: Mesh, cors_url: str) -> None:
    open_gw = httpx.post(mesh.base_url + CHAT, json=BODY, headers={"Origin": APP})
    assert open_gw.status_code == 200 and "access-control-allow-origin" not in open_gw.headers
    err = httpx.post(cors_url + CHAT, json=BODY, headers={"Origin": APP})  # no key: 401
    assert err.status_code == 401
    for r in (err, httpx.post(cors_url + "/v1/nothing", json={}, headers={"Origin": APP})):
        assert r.headers["access-control-allow-origin"] == APP
        assert "x-request-id" in r.headers["access-control-expose-headers"]
        assert "Origin" in r.headers["vary"]


def test_a_streamed_answer_carries_them_too(mesh: Mesh) -> None:
    gw, url = start_gateway(mesh.nats_url, mesh.logs, "gateway-cors-any", cors_origins="*")
    try:
        _ready(url)
        _stream_from_anyone(url)
    finally:
        gw.stop()


def _stream_from_anyone(url: str) -> None:
    with httpx.stream("POST", url + CHAT, json={**BODY, "stream": True},
                      headers={"Origin": "https://anyone.example"}) as r:
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "*"
        assert any(line == "data: [DONE]" for line in r.iter_lines())


def test_other_origins_and_paths_get_no_cors(mesh: Mesh, cors_url: str) -> None:
    r = httpx.options(cors_url + CHAT, headers={"Origin": "https://evil.example", **PREFLIGHT})
    assert r.status_code == 405 and "access-control-allow-origin" not in r.headers
    r = httpx.options(cors_url + "/v1/nothing", headers={"Origin": APP, **PREFLIGHT})
    assert r.status_code == 404
    r = httpx.options(mesh.base_url + CHAT, headers={"Origin": APP, **PREFLIGHT})
    assert r.status_code == 405 and "access-control-allow-origin" not in r.headers
