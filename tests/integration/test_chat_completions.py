"""Chat completions through the whole mesh with the official openai client."""

from __future__ import annotations

import pytest

from tests.integration.conftest import MODEL

HELLO = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def tokenizer():  # the engine's own tokenizer, to count tokens independently
    from inference.engine.loader import load_checkpoint
    from inference.engine.model_store import resolve_model

    return load_checkpoint(resolve_model(None)).tokenizer


def test_chat_completion_non_streaming(client) -> None:
    resp = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8,
                                          temperature=0)
    choice = resp.choices[0]
    assert resp.object == "chat.completion" and resp.model == MODEL
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")


def test_chat_stream_matches_non_streaming(client) -> None:
    kwargs = dict(model=MODEL, messages=[{"role": "user", "content": "Count to five."}],
                  max_tokens=10, temperature=0)
    whole = client.chat.completions.create(**kwargs).choices[0].message.content
    chunks = list(client.chat.completions.create(stream=True, **kwargs))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_usage_equals_real_token_counts(client, tokenizer) -> None:
    text = tokenizer.apply_chat_template(HELLO, add_generation_prompt=True)
    resp = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=6,
                                          temperature=0, logprobs=True,
                                          extra_body={"ignore_eos": True})
    assert resp.usage.prompt_tokens == len(tokenizer.encode(text))
    assert resp.usage.completion_tokens == 6 == len(resp.choices[0].logprobs.content)
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + 6
    assert resp.choices[0].finish_reason == "length"


def test_stream_include_usage_ends_with_usage_chunk(client) -> None:
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=5, temperature=0, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True}))
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 5
    assert all(c.usage is None for c in chunks[:-1])


def test_n2_streams_two_choices(client) -> None:
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=4, temperature=1.0, seed=7, n=2, stream=True))
    texts: dict[int, str] = {0: "", 1: ""}
    finished = set()
    for c in chunks:
        for ch in c.choices:
            texts[ch.index] += ch.delta.content or ""
            if ch.finish_reason:
                finished.add(ch.index)
    assert finished == {0, 1}
    assert texts[0] and texts[1]


def test_top_logprobs(client) -> None:
    resp = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=3,
                                          temperature=0, logprobs=True, top_logprobs=2)
    content = resp.choices[0].logprobs.content
    assert content and all(len(t.top_logprobs) == 2 for t in content)
    assert all(t.logprob <= 0 for t in content)
    # greedy: the chosen token is the most likely one
    assert content[0].token == content[0].top_logprobs[0].token


def test_the_mesh_text_is_the_engines_own(client, smollm_gguf) -> None:
    """The worker makes the text from the engine's token ids (inference/output_text.py): an
    answer that ends on the model's end of turn (hidden) and one in Japanese (characters
    split across tokens) read as the same engine in this process writes them."""
    from inference import LLM, SamplingParams

    llm = LLM(str(smollm_gguf), dtype="float32", max_model_len=1024)
    for content, max_tokens in (("Say hello.", 64), ("Translate 'good morning' into "
                                                     "Japanese.", 24)):
        msgs = [{"role": "user", "content": content}]
        want = llm.chat(msgs, SamplingParams(max_tokens=max_tokens, temperature=0)).outputs[0]
        got = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=max_tokens,
                                             temperature=0).choices[0]
        assert (got.message.content, got.finish_reason) == (want.text, want.finish_reason)
