"""vLLM's `truncate_prompt_tokens` through the real mesh (real SmolLM2 GGUF): a prompt keeps
its last tokens before the context check, on completions, chat and embeddings; the answer is
the one of the kept tokens sent alone; -1 keeps as many as fit; a size over the context, or
not -1 nor positive, is a 400 naming the field."""

from __future__ import annotations

import numpy as np
import pytest

from tests.integration.conftest import MAX_MODEL_LEN, MODEL
from tests.integration.helpers import post

LONG = " ".join(f"word{i} is followed by" for i in range(120))  # ~ 600 tokens


@pytest.fixture(scope="module")
def ids(mesh) -> list[int]:
    status, body, _ = post(mesh.base_url + "/tokenize", {"model": MODEL, "prompt": LONG})
    assert status == 200 and body["count"] > 300
    return body["tokens"]


def _completion(mesh, **fields) -> tuple[int, dict]:
    status, body, _ = post(mesh.base_url + "/v1/completions", {
        "model": MODEL, "temperature": 0, "max_tokens": 4, **fields})
    return status, body


def test_a_completion_keeps_the_last_tokens_and_answers_as_they_would_alone(mesh, ids) -> None:
    status, cut = _completion(mesh, prompt=LONG, truncate_prompt_tokens=50, echo=True)
    assert status == 200, cut
    status, alone = _completion(mesh, prompt=ids[-50:], echo=True)
    assert status == 200, alone
    assert cut["usage"]["prompt_tokens"] == alone["usage"]["prompt_tokens"] == 50
    assert cut["choices"][0]["text"] == alone["choices"][0]["text"]  # echo: the kept text
    status, body, _ = post(mesh.base_url + "/detokenize", {"model": MODEL, "tokens": ids[-50:]})
    assert cut["choices"][0]["text"].startswith(body["prompt"])
    assert not cut["choices"][0]["text"].startswith("word0 ")


def test_token_id_prompts_and_short_prompts(mesh, ids) -> None:
    status, body = _completion(mesh, prompt=ids, truncate_prompt_tokens=7)
    assert status == 200 and body["usage"]["prompt_tokens"] == 7
    status, body = _completion(mesh, prompt=ids[:5], truncate_prompt_tokens=7)  # shorter: all
    assert status == 200 and body["usage"]["prompt_tokens"] == 5


def test_minus_one_keeps_as_many_as_fit_beside_max_tokens(mesh) -> None:
    prompt = LONG + " " + LONG  # over the context
    status, body = _completion(mesh, prompt=prompt)
    assert status == 400 and body["error"]["code"] == "context_length_exceeded"
    status, body = _completion(mesh, prompt=prompt, truncate_prompt_tokens=-1, max_tokens=6)
    assert status == 200, body
    assert body["usage"]["prompt_tokens"] == MAX_MODEL_LEN - 6


def test_chat_counts_the_kept_tokens(mesh) -> None:
    status, body, _ = post(mesh.base_url + "/v1/chat/completions", {
        "model": MODEL, "temperature": 0, "max_tokens": 3, "truncate_prompt_tokens": 20,
        "messages": [{"role": "user", "content": LONG}]})
    assert status == 200, body
    assert body["usage"]["prompt_tokens"] == 20


def test_embeddings_keep_each_inputs_last_tokens(mesh, ids) -> None:
    url = mesh.base_url + "/v1/embeddings"
    status, cut, _ = post(url, {"model": MODEL, "input": [LONG, "short"],
                                "truncate_prompt_tokens": 30})
    assert status == 200, cut
    status, alone, _ = post(url, {"model": MODEL, "input": [ids[-30:]]})
    assert status == 200, alone
    assert np.allclose(cut["data"][0]["embedding"], alone["data"][0]["embedding"], atol=1e-5)
    short = post(url, {"model": MODEL, "input": "short"})[1]
    assert np.allclose(cut["data"][1]["embedding"], short["data"][0]["embedding"], atol=1e-5)
    assert cut["usage"]["prompt_tokens"] == 30 + short["usage"]["prompt_tokens"]
    status, body, _ = post(url, {"model": MODEL, "input": LONG + LONG})
    assert status == 400 and body["error"]["code"] == "context_length_exceeded"
    status, body, _ = post(url, {"model": MODEL, "input": LONG + LONG,
                                 "truncate_prompt_tokens": -1})
    assert status == 200 and body["usage"]["prompt_tokens"] == MAX_MODEL_LEN - 1


def test_an_embedding_keeps_at_most_the_context_less_one(mesh) -> None:
    """An input may be the context less one token: a size that can never fit is refused for
    what it is (audit d: it passed, then failed `context_length_exceeded`)."""
    url = mesh.base_url + "/v1/embeddings"
    status, body, _ = post(url, {"model": MODEL, "input": "hi",
                                 "truncate_prompt_tokens": MAX_MODEL_LEN})
    assert status == 400 and body["error"]["param"] == "truncate_prompt_tokens"
    assert f"limit ({MAX_MODEL_LEN - 1} tokens)" in body["error"]["message"]
    status, body, _ = post(url, {"model": MODEL, "input": LONG + LONG,
                                 "truncate_prompt_tokens": MAX_MODEL_LEN - 1})
    assert status == 200 and body["usage"]["prompt_tokens"] == MAX_MODEL_LEN - 1


@pytest.mark.parametrize("path, body", [
    ("/v1/completions", {"prompt": "hi"}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/embeddings", {"input": "hi"}),
])
@pytest.mark.parametrize("value, says", [
    (0, "must be -1"), (-2, "must be -1"), ("5", "must be an integer"),
    (MAX_MODEL_LEN + 1, "is greater than this model's limit"),
])
def test_a_bad_size_is_a_400_naming_the_field(mesh, path, body, value, says) -> None:
    status, out, _ = post(mesh.base_url + path, {"model": MODEL, **body,
                                                 "truncate_prompt_tokens": value})
    assert status == 400, out
    assert out["error"]["param"] == "truncate_prompt_tokens" and says in out["error"]["message"]
