"""Each error status the gateway owns, from real HTTP requests, in the OpenAI error shape."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from kvmesh.cli import procs
from tests.integration.conftest import MAX_MODEL_LEN, MODEL, Mesh, start_gateway
from tests.integration.helpers import call, post, wait_until

CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "hi"}]


def assert_openai_error(body: dict, param: str | None = None) -> None:
    err = body["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    assert err["message"]
    if param is not None:
        assert err["param"] == param


def test_malformed_json_is_400(mesh: Mesh) -> None:
    status, body, _ = post(mesh.base_url + CHAT, b'{"model": ')
    assert status == 400
    assert_openai_error(body)
    assert "JSON" in body["error"]["message"]


@pytest.mark.parametrize(("field", "value"), [
    ("max_tokens", "ten"), ("temperature", "hot"), ("n", 1.5), ("stream", "yes"),
    ("messages", "hello"), ("top_p", 3), ("stop", 5), ("seed", True),
])
def test_wrong_type_is_400_naming_the_field(mesh: Mesh, field: str, value: object) -> None:
    body = {"model": MODEL, "messages": HELLO, field: value}
    status, resp, _ = post(mesh.base_url + CHAT, body)
    assert status == 400, resp
    assert_openai_error(resp, field)


def test_unknown_model_is_404(mesh: Mesh) -> None:
    status, body, _ = post(mesh.base_url + CHAT, {"model": "no-such-model", "messages": HELLO})
    assert status == 404
    assert_openai_error(body, "model")
    assert body["error"]["code"] == "model_not_found"
    # the router's answer (tokenize checks no scope in the gateway) is the gateway's, word for
    # word: one 404 for a model that does not exist or that a key may not use
    status, tok, _ = post(mesh.base_url + "/tokenize", {"model": "no-such-model", "prompt": "x"})
    assert status == 404 and tok == body


def test_prompt_over_context_is_400_context_length_exceeded(mesh: Mesh) -> None:
    long = "hello " * (MAX_MODEL_LEN + 50)
    status, body, _ = post(mesh.base_url + CHAT, {"model": MODEL, "messages": [
        {"role": "user", "content": long}]})
    assert status == 400, body
    assert (body["error"]["code"], body["error"]["param"]) == ("context_length_exceeded",
                                                               "messages")
    status, body, _ = post(mesh.base_url + "/v1/completions", {"model": MODEL, "prompt": long})
    assert status == 400, body
    assert (body["error"]["code"], body["error"]["param"]) == ("context_length_exceeded",
                                                               "prompt")


def test_max_tokens_past_context_is_400_context_length_exceeded(mesh: Mesh) -> None:
    status, body, _ = post(mesh.base_url + "/v1/completions",
                           {"model": MODEL, "prompt": "hi", "max_tokens": MAX_MODEL_LEN})
    assert status == 400, body
    assert_openai_error(body, "max_tokens")


def test_oversize_body_is_413(mesh: Mesh) -> None:
    big = {"model": MODEL, "messages": [{"role": "user", "content": "x" * (2 << 20)}]}
    status, body, _ = post(mesh.base_url + CHAT, big)
    assert status == 413
    assert_openai_error(body)


def test_a_header_too_large_to_parse_is_a_400_and_one_warning_not_an_error(mesh: Mesh) -> None:
    """aiohttp refuses it before any handler runs; its log line must not be an ERROR with a
    traceback (any client could write them at will) nor quote the header (a key, perhaps)."""
    log = mesh.logs / "gateway.log"

    def warnings() -> list[str]:
        return [line for line in log.read_text().splitlines() if "HTTP parser refused" in line]
    before = len(warnings())
    secret = "kvm_" + "s" * 9000
    req = urllib.request.Request(mesh.base_url + "/v1/models",
                                 headers={"Authorization": f"Bearer {secret}"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    assert info.value.code == 400
    wait_until(lambda: len(warnings()) > before, "the parser's refusal in the gateway log")
    line = json.loads(warnings()[-1])
    assert line["level"] == "WARNING" and "LineTooLong (400)" in line["msg"], line
    text = log.read_text()
    assert "sssssssss" not in text and '"logger": "aiohttp.server", "msg": "Error' not in text


@pytest.mark.parametrize("method, path, body", [
    ("POST", CHAT, {"model": MODEL, "messages": HELLO, "max_tokens": 1}),
    ("POST", "/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 1}),
    ("POST", "/v1/embeddings", {"model": MODEL, "input": "hi"}),
    ("POST", "/tokenize", {"model": MODEL, "prompt": "hi"}),
    ("GET", "/v1/models", None),
    ("GET", f"/v1/models/{MODEL}", None),
])
def test_a_query_parameter_is_a_400_naming_it_not_ignored(mesh: Mesh, method: str, path: str,
                                                        body: dict | None) -> None:
    """`?temperature=2` on a chat was served as if absent (audit c)."""
    status, out, _ = call(method, f"{mesh.base_url}{path}?temperature=2", body)
    assert status == 400 and out["error"]["param"] == "temperature", out
    assert_openai_error(out)


def test_unknown_route_is_404_in_openai_shape(mesh: Mesh) -> None:
    status, body, _ = post(mesh.base_url + "/v1/nothing", {})
    assert status == 404
    assert_openai_error(body)
    assert body["error"]["message"] == "Invalid URL (POST /v1/nothing)"  # OpenAI's words


def test_a_method_the_route_lacks_is_405_naming_those_it_takes(mesh: Mesh) -> None:
    status, body, headers = call("GET", mesh.base_url + "/v1/chat/completions")
    assert status == 405 and body["error"]["code"] == "method_not_allowed"
    assert_openai_error(body)
    assert headers["Allow"] == "POST" and "it takes POST" in body["error"]["message"]


def test_health_ready_and_models(mesh: Mesh) -> None:
    for path in ("/health", "/ready"):
        with urllib.request.urlopen(mesh.base_url + path, timeout=5) as resp:
            assert resp.status == 200
            body = resp.read().decode()
    assert json.loads(body)["models"] == 1 and MODEL not in body  # /ready needs no key
    with urllib.request.urlopen(mesh.base_url + "/v1/models", timeout=5) as resp:
        models = json.loads(resp.read())
    assert [m["id"] for m in models["data"]] == [MODEL]
    assert models["data"][0]["created"] > 1_600_000_000  # the model file's mtime, not 0


def test_no_worker_is_503_with_retry_after(logs_dir: Path) -> None:
    port = procs.free_port()
    nats_child = procs.start_nats(port, log=open(logs_dir / "nats-empty.log", "ab"))  # noqa: SIM115
    gateway, url = start_gateway(f"nats://127.0.0.1:{port}", logs_dir, "gateway-empty")
    try:
        status, body, headers = post(url + CHAT, {"model": MODEL, "messages": HELLO})
        assert status == 503
        assert_openai_error(body)
        assert int(headers["Retry-After"]) >= 1
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url + "/ready", timeout=5)
        assert info.value.code == 503
    finally:
        gateway.stop()
        nats_child.stop()
