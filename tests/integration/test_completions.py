"""Legacy completions through the mesh: streaming, stop, seed, n, token-id prompts."""

from __future__ import annotations

from tests.integration.conftest import MODEL

PROMPT = "The capital of France is"


def test_completion_non_streaming(client) -> None:
    resp = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=6, temperature=0)
    assert resp.object == "text_completion"
    assert resp.choices[0].text
    assert resp.usage.completion_tokens <= 6


def test_completion_stream_matches_non_streaming(client) -> None:
    whole = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8,
                                      temperature=0).choices[0].text
    chunks = list(client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8,
                                            temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_stop_string_ends_text_before_it(client) -> None:
    base = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=12, temperature=0,
                                     extra_body={"ignore_eos": True}).choices[0].text
    words = base.split()
    assert len(words) >= 3, base
    stop = words[2]
    resp = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=12,
                                     temperature=0, stop=[stop],
                                     extra_body={"ignore_eos": True})
    text = resp.choices[0].text
    assert stop not in text
    assert base.startswith(text)
    assert resp.choices[0].finish_reason == "stop"


def test_include_stop_str_in_output_ends_the_text_with_it(client) -> None:
    base = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=12, temperature=0,
                                     extra_body={"ignore_eos": True}).choices[0].text
    stop = base.split()[2]
    want = base[:base.index(stop) + len(stop)]
    kept = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=12, temperature=0,
                                     stop=[stop], extra_body={"ignore_eos": True,
                                                              "include_stop_str_in_output": True})
    assert kept.choices[0].text == want and kept.choices[0].finish_reason == "stop"
    streamed = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=12, temperature=0, stop=[stop], stream=True,
        extra_body={"ignore_eos": True, "include_stop_str_in_output": True})
    assert "".join(c.choices[0].text for c in streamed if c.choices) == want


def test_seed_reproduces_sampled_text(client) -> None:
    def run(seed: int) -> str:
        return client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8,
                                         temperature=1.0, seed=seed).choices[0].text

    first = run(1234)
    assert run(1234) == first


def test_n2_returns_two_choices(client) -> None:
    resp = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=4,
                                     temperature=1.0, seed=3, n=2)
    assert sorted(c.index for c in resp.choices) == [0, 1]
    assert resp.usage.completion_tokens <= 8


def test_ignore_eos_generates_exactly_max_tokens(client) -> None:
    resp = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=7, temperature=0,
                                     extra_body={"ignore_eos": True})
    assert resp.usage.completion_tokens == 7
    assert resp.choices[0].finish_reason == "length"


def test_token_id_prompt_and_logprobs(client) -> None:
    resp = client.completions.create(model=MODEL, prompt=[504, 3575, 282, 4649, 314],
                                     max_tokens=3, temperature=0, logprobs=2)
    lp = resp.choices[0].logprobs
    assert resp.usage.prompt_tokens == 5
    assert len(lp.tokens) == len(lp.token_logprobs) == 3
    assert "".join(lp.tokens) == resp.choices[0].text
