"""`POST /v1/embeddings` through the real mesh (router, workers with the real SmolLM2 GGUF,
served with the default `last` pooling and L2 normalisation): the official openai client,
LangChain and LiteLLM, transformers' numbers, and every refusal."""

from __future__ import annotations

import base64
import os

import numpy as np
import pytest
import torch

from tests.integration.conftest import MAX_MODEL_LEN, MODEL
from tests.integration.helpers import post

HIDDEN = 576  # SmolLM2-135M's hidden size
TEXTS = ["The sea is calm tonight.", "Embeddings map text to vectors.", "kvmesh", "海と風"]


def vec(data) -> np.ndarray:
    return np.asarray(data, dtype=np.float32)


@pytest.fixture(scope="module")
def tokenizer():
    from inference.engine.loader import load_checkpoint
    from inference.engine.model_store import resolve_model

    return load_checkpoint(resolve_model(None), need_weights=False).tokenizer


@pytest.fixture(scope="module")
def floats(client) -> list[np.ndarray]:
    """The float answer for TEXTS, one request."""
    resp = client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    return [vec(d.embedding) for d in resp.data]


def test_openai_client_float_answer_has_openai_shape(client, tokenizer) -> None:
    resp = client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    assert resp.object == "list" and resp.model == MODEL
    assert [d.index for d in resp.data] == list(range(len(TEXTS)))
    assert all(d.object == "embedding" and len(d.embedding) == HIDDEN for d in resp.data)
    assert all(abs(np.linalg.norm(vec(d.embedding)) - 1) < 1e-4 for d in resp.data)
    tokens = sum(len(tokenizer.encode(t)) for t in TEXTS)
    assert resp.usage.prompt_tokens == resp.usage.total_tokens == tokens


def test_base64_decodes_to_the_float_answer(client, mesh, floats) -> None:
    # the client asks for base64 by default and decodes it itself
    by_client = client.embeddings.create(model=MODEL, input=TEXTS)
    status, body, _ = post(mesh.base_url + "/v1/embeddings",
                           {"model": MODEL, "input": TEXTS, "encoding_format": "base64"})
    assert status == 200
    for i, want in enumerate(floats):
        raw = np.frombuffer(base64.b64decode(body["data"][i]["embedding"]), dtype="<f4")
        assert np.array_equal(raw, want)
        assert np.allclose(vec(by_client.data[i].embedding), want, atol=1e-6)


def test_each_input_of_a_batch_equals_it_alone(client, floats) -> None:
    for text, want in zip(TEXTS, floats, strict=True):
        alone = client.embeddings.create(model=MODEL, input=text, encoding_format="float")
        assert np.allclose(vec(alone.data[0].embedding), want, atol=1e-4)


def test_token_arrays_embed_as_their_text(client, tokenizer, floats) -> None:
    ids = [tokenizer.encode(t) for t in TEXTS]
    resp = client.embeddings.create(model=MODEL, input=ids, encoding_format="float")
    for d, want in zip(resp.data, floats, strict=True):
        assert np.allclose(vec(d.embedding), want, atol=1e-4)
    one = client.embeddings.create(model=MODEL, input=ids[0], encoding_format="float")
    assert np.allclose(vec(one.data[0].embedding), floats[0], atol=1e-4)


def test_dimensions_truncate_and_renormalise(client, floats) -> None:
    resp = client.embeddings.create(model=MODEL, input=TEXTS[0], dimensions=64,
                                    encoding_format="float")
    got = vec(resp.data[0].embedding)
    assert got.shape == (64,)
    want = floats[0][:64] / np.linalg.norm(floats[0][:64])
    assert np.allclose(got, want, atol=1e-4)


def test_vectors_equal_transformers_last_hidden_state(client, tokenizer, smollm_gguf,
                                                      floats) -> None:
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(smollm_gguf.parent), gguf_file=smollm_gguf.name,
                                              dtype=torch.float32).eval()
    for text, got in zip(TEXTS, floats, strict=True):
        with torch.no_grad():
            h = hf.model(torch.tensor([tokenizer.encode(text)])).last_hidden_state[0, -1]
        want = torch.nn.functional.normalize(h, dim=0).numpy()
        assert np.abs(got - want).max() < 1e-4


def test_langchain_openai_embeddings(mesh, floats) -> None:
    lc = pytest.importorskip("langchain_openai")
    emb = lc.OpenAIEmbeddings(model=MODEL, base_url=mesh.base_url + "/v1", api_key="unused",
                              check_embedding_ctx_length=False, max_retries=0)
    docs = emb.embed_documents(TEXTS[:2])
    assert np.allclose(vec(docs), np.stack(floats[:2]), atol=1e-4)
    assert np.allclose(vec(emb.embed_query(TEXTS[2])), floats[2], atol=1e-4)


def test_litellm_embedding(mesh, floats) -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch from the internet
    litellm = pytest.importorskip("litellm")
    resp = litellm.embedding(model=f"openai/{MODEL}", input=TEXTS[:2],
                             api_base=mesh.base_url + "/v1", api_key="unused")
    got = [vec(d["embedding"]) for d in resp.data]
    assert np.allclose(np.stack(got), np.stack(floats[:2]), atol=1e-4)
    assert resp.usage.prompt_tokens > 0


@pytest.mark.parametrize(("body", "param", "code"), [
    ({"model": MODEL}, "input", "invalid_value"),
    ({"model": MODEL, "input": ""}, "input", "invalid_value"),
    ({"model": MODEL, "input": []}, "input", "invalid_value"),
    ({"model": MODEL, "input": ["a", ""]}, "input", "invalid_value"),
    ({"model": MODEL, "input": [[]]}, "input", "invalid_value"),
    ({"model": MODEL, "input": ["a", [1, 2]]}, "input", "invalid_value"),
    ({"model": MODEL, "input": [1, -2]}, "input", "invalid_value"),
    ({"model": MODEL, "input": 42}, "input", "invalid_type"),
    ({"model": MODEL, "input": ["a"] * 2049}, "input", "invalid_value"),
    ({"model": MODEL, "input": "a", "encoding_format": "int8"}, "encoding_format",
     "unsupported_value"),
    ({"model": MODEL, "input": "a", "dimensions": 0}, "dimensions", "invalid_value"),
    ({"model": MODEL, "input": "a", "dimensions": "8"}, "dimensions", "invalid_type"),
    ({"model": MODEL, "input": "a", "dimensions": True}, "dimensions", "invalid_type"),
    ({"model": MODEL, "input": "a", "dimensions": HIDDEN + 1}, "dimensions", "invalid_value"),
    ({"model": MODEL, "input": "a", "user": 7}, "user", "invalid_type"),
    ({"model": MODEL, "input": "a", "temperature": 0}, "temperature", "unknown_parameter"),
    ({"model": MODEL, "input": "a", "truncate_prompt_tokens": 0}, "truncate_prompt_tokens",
     "invalid_value"),
    ({"model": MODEL, "input": "a", "truncate_prompt_tokens": "8"}, "truncate_prompt_tokens",
     "invalid_type"),
    ({"input": "a"}, "model", "invalid_value"),
    ({"model": MODEL, "input": [[5] * MAX_MODEL_LEN]}, "input", "context_length_exceeded"),
    ({"model": MODEL, "input": ["a", "word " * (MAX_MODEL_LEN + 10)]}, "input",
     "context_length_exceeded"),
])
def test_bad_requests_are_400_naming_the_field(mesh, body, param, code) -> None:
    status, got, _ = post(mesh.base_url + "/v1/embeddings", body)
    assert status == 400, got
    assert got["error"]["param"] == param and got["error"]["code"] == code, got


def test_unknown_model_is_404(mesh) -> None:
    status, got, _ = post(mesh.base_url + "/v1/embeddings", {"model": "nope", "input": "a"})
    assert status == 404 and got["error"]["code"] == "model_not_found"
