"""lm-evaluation-harness's own `local-completions` model class scoring log-likelihoods against
the mesh (echo, logprobs, a batch of token-id prompts, as the harness sends them), with the
default model's tokenizer written to a folder from its GGUF (no network, no data set)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import MODEL
from tests.integration.helpers import post

PAIRS = [  # (context, continuation); the plausible one of each couple first
    ("The capital of France is", " Paris"),
    ("The capital of France is", " banana"),
    ("One, two, three, four,", " five"),
    ("One, two, three, four,", " purple"),
]


@pytest.fixture(scope="module")
def hf_tokenizer_dir(smollm_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("smollm-tokenizer")
    tok = AutoTokenizer.from_pretrained(str(smollm_gguf.parent), gguf_file=smollm_gguf.name)
    tok.save_pretrained(str(out))
    return out


def _echo_sum(base_url: str, ids: list[int], start: int) -> float:
    """Our own prompt logprobs of `ids[start:]`, asked directly (echo, max_tokens 0)."""
    status, body, _ = post(base_url + "/v1/completions", {
        "model": MODEL, "prompt": ids, "echo": True, "logprobs": 1, "max_tokens": 0,
        "temperature": 0})
    assert status == 200, body
    return sum(body["choices"][0]["logprobs"]["token_logprobs"][start:])


def test_local_completions_loglikelihood_equals_our_prompt_logprobs(mesh, hf_tokenizer_dir):
    from lm_eval.api.instance import Instance
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    lm = LocalCompletionsAPI(base_url=mesh.base_url + "/v1/completions", model=MODEL,
                             tokenizer_backend="huggingface", tokenizer=str(hf_tokenizer_dir),
                             batch_size=len(PAIRS), max_retries=1)
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(PAIRS)]
    results = lm.loglikelihood(requests)
    assert len(results) == len(PAIRS)

    for (context, continuation), (logprob, _greedy) in zip(PAIRS, results, strict=True):
        ctx = lm.tok_encode(context)
        whole = lm.tok_encode(context + continuation)
        assert whole[: len(ctx)] == ctx
        assert logprob == pytest.approx(_echo_sum(mesh.base_url, whole, len(ctx)), abs=1e-4)
    assert results[0][0] > results[1][0]  # " Paris" over " banana"
    assert results[2][0] > results[3][0]  # " five" over " purple"
