"""Completions with `echo`, prompt logprobs, batches of prompts and `suffix`, through the mesh
with the official openai client; prompt logprobs checked against transformers on the real
GGUF. lm-evaluation-harness's own `local-completions` model is in test_lm_eval.py."""

from __future__ import annotations

import math
import time

import openai
import pytest
import torch

from tests.integration.conftest import MAX_MODEL_LEN, MODEL
from tests.integration.helpers import open_stream, post, sse_events

PROMPT = "The capital of France is"
TOL = 1e-3  # our float32 CPU logits against transformers' (the engine tests hold 1e-4 on logits)


def test_echo_text_starts_with_the_prompt_streamed_or_not(client) -> None:
    whole = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=5, temperature=0,
                                      echo=True)
    plain = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=5, temperature=0)
    assert whole.choices[0].text == PROMPT + plain.choices[0].text
    chunks = list(client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=5,
                                            temperature=0, echo=True, stream=True))
    assert chunks[0].choices[0].text == PROMPT  # the prompt comes first, on its own
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text


def test_echo_logprobs_with_max_tokens_0_equal_transformers(client, smollm_gguf) -> None:
    from transformers import AutoModelForCausalLM

    text = "Paris is the capital of France, and Berlin is the capital of Germany."
    resp = client.completions.create(model=MODEL, prompt=text, max_tokens=0, temperature=0,
                                     echo=True, logprobs=1)
    choice = resp.choices[0]
    assert choice.text == text and choice.finish_reason == "length"
    assert resp.usage.completion_tokens == 0
    lp = choice.logprobs
    n = resp.usage.prompt_tokens
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == n > 10
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None  # as OpenAI
    assert "".join(lp.tokens) == text and lp.text_offset[0] == 0
    # the position's own token first, then the one alternative asked for (OpenAI's up to
    # logprobs + 1), which may be that token
    assert all(next(iter(top)) == t and top[t] == v and len(top) <= 2 and max(top.values()) >= v
               for top, t, v in zip(lp.top_logprobs[1:], lp.tokens[1:], lp.token_logprobs[1:],
                                    strict=True))

    ids = client.completions.create(model=MODEL, prompt=text, max_tokens=0, temperature=0,
                                    echo=True, logprobs=0)
    hf = AutoModelForCausalLM.from_pretrained(str(smollm_gguf.parent), gguf_file=smollm_gguf.name,
                                              dtype=torch.float32).eval()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(smollm_gguf.parent), gguf_file=smollm_gguf.name)
    prompt_ids = tok(text, add_special_tokens=False).input_ids
    assert len(prompt_ids) == n, "our tokenizer and transformers' agree on the prompt"
    with torch.no_grad():
        ref = hf(torch.tensor([prompt_ids])).logits[0].float().log_softmax(-1)
    want = ref[torch.arange(n - 1), torch.tensor(prompt_ids[1:])].tolist()
    for got in (lp.token_logprobs[1:], ids.choices[0].logprobs.token_logprobs[1:]):
        assert max(abs(a - b) for a, b in zip(got, want, strict=True)) <= TOL
    best = ref.max(-1).values[: n - 1].tolist()  # the top alternative: transformers' best
    tops = [max(t.values()) for t in lp.top_logprobs[1:]]
    assert max(abs(a - b) for a, b in zip(tops, best, strict=True)) <= TOL


def test_echo_logprobs_then_generated_tokens(client) -> None:
    resp = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=3, temperature=0,
                                     echo=True, logprobs=2, extra_body={"ignore_eos": True})
    lp = resp.choices[0].logprobs
    assert len(lp.tokens) == resp.usage.prompt_tokens + 3
    assert "".join(lp.tokens) == resp.choices[0].text
    assert all(v is not None and v <= 0 for v in lp.token_logprobs[1:])
    assert lp.text_offset == sorted(lp.text_offset)
    stream = list(client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=3,
                                            temperature=0, echo=True, logprobs=2, stream=True,
                                            extra_body={"ignore_eos": True}))
    tokens = [t for c in stream if c.choices and c.choices[0].logprobs
              for t in c.choices[0].logprobs.tokens]
    assert tokens == lp.tokens


def test_batch_of_prompts_indexes_choices_and_sums_usage(client) -> None:
    prompts = [PROMPT, [504, 3575, 282, 4649, 314], "Once upon a time"]
    kw = {"model": MODEL, "max_tokens": 4, "temperature": 0, "extra_body": {"ignore_eos": True}}
    batch = client.completions.create(prompt=prompts, n=2, **kw)
    singles = [client.completions.create(prompt=p, **kw) for p in prompts]
    assert sorted(c.index for c in batch.choices) == list(range(6))
    by_index = {c.index: c.text for c in batch.choices}
    for i, single in enumerate(singles):
        assert by_index[2 * i] == by_index[2 * i + 1] == single.choices[0].text  # greedy
    assert batch.usage.prompt_tokens == sum(s.usage.prompt_tokens for s in singles)
    assert batch.usage.completion_tokens == 2 * sum(s.usage.completion_tokens for s in singles)

    texts: dict[int, str] = {}
    last = None
    for chunk in client.completions.create(prompt=prompts, n=2, stream=True,
                                           stream_options={"include_usage": True}, **kw):
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + c.text
        last = chunk
    assert texts == by_index
    assert last is not None and last.usage.completion_tokens == batch.usage.completion_tokens


def test_batch_with_echo_and_max_tokens_0(client) -> None:
    prompts = ["The sky is blue", "Grass is green"]
    resp = client.completions.create(model=MODEL, prompt=prompts, max_tokens=0, temperature=0,
                                     echo=True, logprobs=1)
    assert [c.text for c in sorted(resp.choices, key=lambda c: c.index)] == prompts
    assert all(math.isfinite(sum(c.logprobs.token_logprobs[1:])) for c in resp.choices)


def test_one_failing_prompt_fails_the_batch_naming_it(mesh) -> None:
    status, body, _ = post(mesh.base_url + "/v1/completions", {
        "model": MODEL, "prompt": [PROMPT, [1] * 2000], "max_tokens": 2})
    assert status == 400
    assert body["error"]["code"] == "context_length_exceeded"
    assert body["error"]["param"] == "prompt[1]", body
    assert body["error"]["message"].startswith("prompt[1]: ")
    status, body, _ = post(mesh.base_url + "/v1/completions", {
        "model": MODEL, "prompt": [PROMPT, [1] * 1000], "max_tokens": MAX_MODEL_LEN - 500})
    assert status == 400 and body["error"]["param"] == "max_tokens", body
    assert body["error"]["message"].startswith("prompt 1: ")


@pytest.mark.parametrize(("body", "param"), [
    ({"suffix": " and that is all."}, "suffix"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"echo": "yes"}, "echo"),
    ({"prompt": ["ok", ""]}, "prompt[1]"),
    ({"prompt": ["ok"] * 2049}, "prompt"),
])
def test_bad_completion_fields_are_400_naming_them(client, body, param) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(**{"model": MODEL, "prompt": PROMPT, **body})
    assert err.value.body["param"] == param


def test_client_leaving_a_batch_cancels_every_prompt(mesh) -> None:
    body = {"model": MODEL, "prompt": [f"Story number {i}: once upon a time" for i in range(3)],
            "max_tokens": 500, "temperature": 0, "ignore_eos": True}
    resp = open_stream(mesh.base_url + "/v1/completions", body)
    events = sse_events(resp)
    for _ in range(3):
        next(events)
    assert sum(mesh.stats(w).running for w in mesh.live_worker_ids()) > 0
    resp.close()  # the client goes away: every prompt of the batch stops at its worker

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        stats = [mesh.stats(w) for w in sorted(mesh.live_worker_ids())]
        if all(s.running == 0 and s.waiting == 0 for s in stats):
            return
        time.sleep(0.05)
    raise AssertionError(f"workers still run the batch: {stats}")


def test_top_logprobs_hold_the_sampled_token(client) -> None:
    """OpenAI: "the API will always return the logprob of the sampled token": with
    `logprobs: 0` each position's `top_logprobs` is that token alone; drawn far from greedy
    (temperature 2), it stands beside the one alternative `logprobs: 1` asks for."""
    for n_top in (0, 1):
        resp = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8,
                                         temperature=2.0, seed=8, logprobs=n_top,
                                         extra_body={"ignore_eos": True})
        lp = resp.choices[0].logprobs
        for top, t, v in zip(lp.top_logprobs, lp.tokens, lp.token_logprobs, strict=True):
            assert next(iter(top)) == t and top[t] == v and len(top) <= n_top + 1
        if n_top:
            assert any(len(top) == 2 for top in lp.top_logprobs), "every draw was the best"
