"""Logprob tokens through the whole mesh: a character split over tokens shows U+FFFD in each
token's text, and the tokens' `bytes` joined give the character back (OpenAI's contract for
`bytes`); an echoed one-token prompt keeps its token's text; vLLM's
`return_tokens_as_token_ids` names them by id."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import MODEL, Mesh
from tests.integration.helpers import open_stream, post, sse_events


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


def _ids(tokens: list[str]) -> list[int]:
    assert all(t.startswith("token_id:") for t in tokens), tokens
    return [int(t.removeprefix("token_id:")) for t in tokens]


def test_tokens_as_token_ids_give_the_exact_ids_of_a_split_character(mesh: Mesh) -> None:
    """vLLM's `return_tokens_as_token_ids`: where the texts show U+FFFD, the ids rebuild the
    answer; the numbers are the plain request's."""
    ask = {"model": MODEL, "messages": [{"role": "user", "content": "A rocket emoji, please."}],
           "guided_regex": " 🚀 中", "max_tokens": 16, "logprobs": True, "top_logprobs": 2}
    plain = post(mesh.base_url + "/v1/chat/completions", ask)[1]["choices"][0]
    status, body, _ = post(mesh.base_url + "/v1/chat/completions",
                           {**ask, "return_tokens_as_token_ids": True})
    assert status == 200, body
    entries = body["choices"][0]["logprobs"]["content"]
    ids = _ids([e["token"] for e in entries])
    assert all(e["bytes"] == list(e["token"].encode()) for e in entries)  # vLLM's bytes
    assert all(_ids([t["token"] for t in e["top_logprobs"]]) for e in entries)
    assert [e["logprob"] for e in entries] == [
        e["logprob"] for e in plain["logprobs"]["content"]]
    status, text, _ = post(mesh.base_url + "/detokenize", {"model": MODEL, "tokens": ids})
    assert text["prompt"] == body["choices"][0]["message"]["content"] == " 🚀 中"


def test_tokens_as_token_ids_on_an_echoed_completion_streamed_or_not(mesh: Mesh) -> None:
    prompt = "The capital of France is"
    ask = {"model": MODEL, "prompt": prompt, "max_tokens": 4, "temperature": 0, "echo": True,
           "logprobs": 1, "return_tokens_as_token_ids": True}
    status, body, _ = post(mesh.base_url + "/v1/completions", ask)
    assert status == 200, body
    lp = body["choices"][0]["logprobs"]
    ids = _ids(lp["tokens"])
    want = post(mesh.base_url + "/tokenize", {"model": MODEL, "prompt": prompt})[1]["tokens"]
    assert ids[:len(want)] == want  # the echoed prompt's ids, its first token's too
    assert all(_ids(list(top)) for top in lp["top_logprobs"][1:])
    status, text, _ = post(mesh.base_url + "/detokenize", {"model": MODEL, "tokens": ids})
    assert text["prompt"] == body["choices"][0]["text"]
    with open_stream(mesh.base_url + "/v1/completions", ask) as resp:
        streamed = [json.loads(e) for e in sse_events(resp) if e != "[DONE]"]
    assert [t for e in streamed for t in e["choices"][0]["logprobs"]["tokens"]] == lp["tokens"]


def _offsets(mesh: Mesh, ask: dict) -> tuple[list[int], list[int], list[str]]:
    """`text_offset` of the answer to `ask`, whole and streamed, and its tokens."""
    status, body, _ = post(mesh.base_url + "/v1/completions", ask)
    assert status == 200, body
    with open_stream(mesh.base_url + "/v1/completions", ask) as resp:
        events = [json.loads(e) for e in sse_events(resp) if e != "[DONE]"]
    streamed = [o for e in events for c in e["choices"] if c["logprobs"]
                for o in c["logprobs"]["text_offset"]]
    lp = body["choices"][0]["logprobs"]
    return lp["text_offset"], streamed, lp["tokens"]


@pytest.mark.parametrize("ask", [
    # a token of 80 '#'; the stop string holds the text back while it might match
    {"prompt": "x", "allowed_token_ids": [45855], "stop": ["#\n"], "max_tokens": 3},
    # characters split over tokens: each token's text shows U+FFFD
    {"prompt": "Emoji party: 😀😃😄😁😆😅🤣😂🙂🙃😉😊😇🥰😍🤩😘 ", "max_tokens": 6},
    {"prompt": "Emoji 😀 ok", "max_tokens": 4, "echo": True},
])
def test_text_offsets_are_the_same_streamed_or_not(mesh: Mesh, ask: dict) -> None:
    whole, streamed, tokens = _offsets(mesh, {"model": MODEL, "temperature": 0, "logprobs": 1,
                                              **ask})
    assert whole == streamed, (whole, streamed)
    # each token starts where the one before ends: an echoed prompt's tokens included
    assert whole == [sum(map(len, tokens[:i])) for i in range(len(tokens))], (whole, tokens)
