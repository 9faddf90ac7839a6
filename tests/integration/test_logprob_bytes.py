"""Logprob tokens through the whole mesh: a character split over tokens shows U+FFFD in each
token's text, and the tokens' `bytes` joined give the character back (OpenAI's contract for
`bytes`); an echoed one-token prompt keeps its token's text."""

from __future__ import annotations

from tests.integration.conftest import MODEL, Mesh
from tests.integration.helpers import post


def test_bytes_of_a_split_character_rebuild_it(mesh: Mesh) -> None:
    status, body, _ = post(mesh.base_url + "/v1/chat/completions", {
        "model": MODEL, "messages": [{"role": "user", "content": "A rocket emoji, please."}],
        "guided_regex": " 🚀 中", "max_tokens": 16, "logprobs": True, "top_logprobs": 2})
    assert status == 200, body
    tokens = body["choices"][0]["logprobs"]["content"]
    assert any("\ufffd" in t["token"] for t in tokens), tokens  # SmolLM2 splits the emoji
    assert bytes(b for t in tokens for b in t["bytes"]).decode() == " 🚀 中"
    for t in tokens:
        for top in t["top_logprobs"]:
            assert "\ufffd" in top["token"] or bytes(top["bytes"]).decode() == top["token"]


def test_an_echoed_one_token_prompt_keeps_its_token_text(mesh: Mesh) -> None:
    status, body, _ = post(mesh.base_url + "/v1/completions", {
        "model": MODEL, "prompt": "hi", "max_tokens": 0, "echo": True, "logprobs": 1})
    assert status == 200, body
    assert body["choices"][0]["logprobs"]["tokens"] == ["hi"]
