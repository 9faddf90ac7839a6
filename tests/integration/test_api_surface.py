"""The OpenAI surface beyond chat and completions' everyday fields, through the session's mesh
with the official openai client: x-request-id on every response, GET /v1/models/{id},
/tokenize and /detokenize, logit_bias in the real model's sampler, and fields refused with a
400 naming them."""

from __future__ import annotations

import json
import uuid
from typing import Any

import openai
import pytest

from tests.integration.conftest import MAX_MODEL_LEN, MODEL, Mesh
from tests.integration.helpers import call, open_stream, post, wait_until

HELLO = [{"role": "user", "content": "Say hello."}]


def test_a_client_request_id_comes_back_on_success_stream_and_error(client: Any) -> None:
    mine = f"test-{uuid.uuid4().hex}"
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=HELLO, max_tokens=2, extra_headers={"X-Request-Id": mine})
    assert raw.parse()._request_id == mine
    with client.chat.completions.with_streaming_response.create(
            model=MODEL, messages=HELLO, max_tokens=2, stream=True,
            extra_headers={"X-Request-Id": mine + "-s"}) as stream:
        assert stream.headers["x-request-id"] == mine + "-s"
        assert list(stream.iter_lines())
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=HELLO, tools="notalist",
                                       extra_headers={"X-Request-Id": mine + "-e"})
    assert err.value.request_id == mine + "-e" and err.value.body["param"] == "tools"


def test_a_cancel_reaches_the_worker_log_under_the_clients_request_id(mesh: Mesh,
                                                                     client: Any) -> None:
    """A stream the client drops is cancelled at its worker; that log line carries the HTTP
    request's id, as every other hop's do."""
    mine = f"cancel-{uuid.uuid4().hex}"
    with client.chat.completions.with_streaming_response.create(
            model=MODEL, messages=HELLO, max_tokens=200, stream=True,
            extra_body={"ignore_eos": True}, extra_headers={"X-Request-Id": mine}) as stream:
        next(stream.iter_lines())  # the request runs at a worker; then the client leaves

    def logged() -> bool:
        return any(mine in line and "cancelled" in line for log in mesh.logs.glob("w*.log")
                   for line in log.read_text(errors="replace").splitlines())
    wait_until(logged, "a worker log line naming the cancelled request's id", 30)


def test_without_a_valid_client_id_the_response_id_or_ours_is_used(mesh: Mesh,
                                                                   client: Any) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=HELLO, max_tokens=2, extra_headers={"X-Request-Id": "bad id"})
    assert raw.headers["x-request-id"] == raw.parse().id
    status, _, headers = post(mesh.base_url + "/v1/completions", {"model": MODEL})
    assert status == 400 and headers["x-request-id"].startswith("req_")
    status, _, headers = call("GET", mesh.base_url + "/v1/models/no-such-model")
    assert status == 404 and headers["x-request-id"].startswith("req_")
    stream = open_stream(mesh.base_url + "/v1/completions",
                         {"model": MODEL, "prompt": "Hi", "max_tokens": 2})
    with stream:
        assert stream.headers["x-request-id"].startswith("cmpl-")


def test_models_retrieve_and_unknown_model_404(client: Any) -> None:
    model = client.models.retrieve(MODEL)
    assert model.id == MODEL and model.object == "model" and model.owned_by == "kvmesh"
    assert model.model_dump()["max_model_len"] == MAX_MODEL_LEN
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("no-such-model")
    assert err.value.body["code"] == "model_not_found" and err.value.body["param"] == "model"


def test_tokenize_counts_what_a_generation_counts_and_detokenize_inverts_it(
        mesh: Mesh, client: Any) -> None:
    status, tok, _ = post(mesh.base_url + "/tokenize", {"model": MODEL, "messages": HELLO,
                                                        "return_token_strs": True})
    assert status == 200 and tok["max_model_len"] == MAX_MODEL_LEN
    assert tok["count"] == len(tok["tokens"]) == len(tok["token_strs"])
    usage = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=1).usage
    assert usage.prompt_tokens == tok["count"]
    status, plain, _ = post(mesh.base_url + "/tokenize", {"model": MODEL, "prompt": "Hello world"})
    assert status == 200 and plain["token_strs"] is None
    status, back, _ = post(mesh.base_url + "/detokenize", {"model": MODEL,
                                                           "tokens": plain["tokens"]})
    assert status == 200 and back == {"prompt": "Hello world"}


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/detokenize", {"model": MODEL, "tokens": [10 ** 9]}, "tokens"),
    ("/detokenize", {"model": MODEL, "tokens": "abc"}, "tokens"),
    ("/tokenize", {"model": MODEL}, "prompt"),
    ("/tokenize", {"model": MODEL, "prompt": "x", "chat_template": "{{x}}"}, "chat_template"),
    ("/tokenize", {"model": "no-such-model", "prompt": "x"}, "model"),
    ("/tokenize", {"model": MODEL, "prompt": "x", "tools": []}, "tools"),
])
def test_tokenize_and_detokenize_refuse_bad_bodies_naming_the_field(
        mesh: Mesh, path: str, body: dict[str, Any], param: str) -> None:
    status, reply, _ = post(mesh.base_url + path, body)
    assert status in (400, 404) and reply["error"]["param"] == param, reply


def _token(mesh: Mesh, text: str) -> int:
    _, tok, _ = post(mesh.base_url + "/tokenize", {"model": MODEL, "prompt": text})
    return tok["tokens"][0]


def test_logit_bias_forces_and_bans_tokens_on_the_real_model(mesh: Mesh, client: Any) -> None:
    forced = _token(mesh, " banana")
    out = client.completions.create(model=MODEL, prompt="The capital of France is",
                                    max_tokens=3, temperature=0,
                                    logit_bias={str(forced): 100})
    assert out.choices[0].text == " banana" * 3
    plain = client.completions.create(model=MODEL, prompt="The capital of France is",
                                      max_tokens=1, temperature=0)
    first = _token(mesh, plain.choices[0].text)
    banned = client.completions.create(model=MODEL, prompt="The capital of France is",
                                       max_tokens=1, temperature=0,
                                       logit_bias={str(first): -100})
    assert banned.choices[0].text != plain.choices[0].text


def test_min_p_of_1_samples_only_the_likeliest_token(client: Any) -> None:
    """`min_p: 1` keeps only the likeliest token: a hot sampled answer is the greedy one."""
    def answer(**extra: Any) -> str:
        return client.completions.create(model=MODEL, prompt="Once upon a time",
                                         max_tokens=12, **extra).choices[0].text

    greedy = answer(temperature=0)
    assert answer(temperature=1.5, seed=3, extra_body={"min_p": 1.0}) == greedy
    assert answer(temperature=1.5, seed=3) != greedy  # the same draw without it strays


def test_min_tokens_holds_off_the_end_and_its_bad_values_are_400(client: Any) -> None:
    """A short greedy answer runs on to `min_tokens` (streamed too), its stop string unseen
    there; `min_tokens` over the token limit, or beside a grammar, is a 400 naming it."""
    plain = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=60,
                                           temperature=0)
    short = plain.usage.completion_tokens
    assert plain.choices[0].finish_reason == "stop" and short < 40
    held = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=60,
                                          temperature=0, extra_body={"min_tokens": 40})
    assert held.usage.completion_tokens > 40
    assert held.choices[0].message.content.startswith(plain.choices[0].message.content)
    first = plain.choices[0].message.content.split()[0]
    stream = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=40, temperature=0, stream=True,
        stream_options={"include_usage": True}, stop=[first], extra_body={"min_tokens": 40})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage.completion_tokens == 40 and text.startswith(first)
    assert held.choices[0].message.content.startswith(text)
    for extra in ({"min_tokens": 61}, {"min_tokens": -1}, {"min_tokens": "3"},
                  {"min_tokens": 2, "response_format": {"type": "json_object"}}):
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=60,
                                           extra_body=extra)
        assert err.value.body["param"] == "min_tokens", extra
    with pytest.raises(openai.BadRequestError) as err:  # no limit given: the context's is
        client.chat.completions.create(model=MODEL, messages=HELLO,
                                       extra_body={"min_tokens": MAX_MODEL_LEN})
    assert err.value.body["param"] == "min_tokens"


def test_a_continued_assistant_message_is_answered_as_its_prompt_is(mesh: Mesh,
                                                                     client: Any) -> None:
    """`continue_final_message`: the answer continues the assistant's prefill, token for token
    what a completion of the same prompt (the /tokenize of those fields) gives; template
    variables the template does not read change nothing; a reserved one is a 400."""
    msgs = [{"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "The capital of France is"}]
    fields = {"add_generation_prompt": False, "continue_final_message": True}
    status, tok, _ = post(mesh.base_url + "/tokenize", {"model": MODEL, "messages": msgs,
                                                         **fields})
    assert status == 200, tok
    status, text, _ = post(mesh.base_url + "/detokenize", {"model": MODEL,
                                                            "tokens": tok["tokens"]})
    assert text["prompt"].endswith("The capital of France is")  # left open: no end of turn
    chat = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=8,
                                          temperature=0, extra_body=fields)
    done = client.completions.create(model=MODEL, prompt=tok["tokens"], max_tokens=8,
                                     temperature=0)
    assert chat.choices[0].message.content == done.choices[0].text
    assert chat.usage.prompt_tokens == tok["count"]
    plain = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8,
                                           temperature=0)
    unread = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=8, temperature=0,
        extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    assert unread.choices[0].message.content == plain.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8,
                                       extra_body={"chat_template_kwargs": {"tools": []}})
    assert err.value.body["param"] == "chat_template_kwargs"


def test_skip_special_tokens_false_shows_them(client: Any) -> None:
    """Past its end of turn (`ignore_eos`) the answer holds SmolLM2's special tokens: their
    text shows only with `skip_special_tokens: false`, streamed or not."""
    def answer(stream: bool = False, **extra: Any) -> str:
        out = client.chat.completions.create(
            model=MODEL, messages=HELLO, max_tokens=60, temperature=0, stream=stream,
            extra_body={"ignore_eos": True, **extra})
        if stream:
            return "".join(c.choices[0].delta.content or "" for c in out if c.choices)
        return out.choices[0].message.content

    shown = answer(skip_special_tokens=False)
    assert "<|im_end|>" in shown and "<|im_end|>" not in answer()
    assert answer(stream=True, skip_special_tokens=False) == shown


@pytest.mark.parametrize("skip", [True, False])
def test_logprob_tokens_join_to_the_text_with_or_without_special_tokens(client: Any,
                                                                        skip: bool) -> None:
    out = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=40, temperature=0, logprobs=True,
        extra_body={"ignore_eos": True, "skip_special_tokens": skip})
    choice = out.choices[0]
    assert ("<|im_end|>" in choice.message.content) is not skip
    assert "".join(e.token for e in choice.logprobs.content) == choice.message.content


def test_an_echoed_prompts_special_tokens_show_in_its_logprob_tokens(client: Any) -> None:
    prompt = "<|im_start|>user\nHi<|im_end|>\n"
    out = client.completions.create(model=MODEL, prompt=prompt, max_tokens=0, echo=True,
                                    logprobs=0)
    tokens = out.choices[0].logprobs.tokens
    assert "<|im_start|>" in tokens and "".join(tokens) == prompt == out.choices[0].text


def test_allowed_token_ids_hold_the_answer_to_them(mesh: Mesh, client: Any) -> None:
    ids = [post(mesh.base_url + "/tokenize", {"model": MODEL, "prompt": w})[1]["tokens"][0]
           for w in (" yes", " no")]
    for seed in range(3):
        out = client.completions.create(model=MODEL, prompt="Is the sky green? Answer:",
                                        max_tokens=3, temperature=1.5, seed=seed,
                                        logprobs=4, extra_body={"allowed_token_ids": ids})
        assert out.usage.completion_tokens == 3  # no end of sequence among them
        assert set(out.choices[0].logprobs.tokens) <= {" yes", " no"}, out.choices[0]
        tops = [v for top in out.choices[0].logprobs.top_logprobs for v in top.values()]
        assert min(tops) == -9999.0  # forbidden alternatives: OpenAI's floor, not -inf/null
    for value in ([10**9], [], ["x"]):
        with pytest.raises(openai.BadRequestError) as err:
            client.completions.create(model=MODEL, prompt="Hi", max_tokens=1,
                                      extra_body={"allowed_token_ids": value})
        assert err.value.body["param"] == "allowed_token_ids", value


def test_penalties_reach_the_engine_and_out_of_range_ones_are_400(client: Any) -> None:
    """Each penalty changes a greedy answer that repeats itself (the formulas are checked
    against transformers in tests/unit/test_penalties.py); a value out of range is a 400."""
    prompt = "Repeat after me: the cat sat on the mat. The cat sat on the mat. The cat"

    def answer(**extra: float) -> str:
        out = client.completions.create(model=MODEL, prompt=prompt, max_tokens=16,
                                        temperature=0, extra_body=extra)
        return out.choices[0].text

    plain = answer()
    for extra in ({"frequency_penalty": 2.0}, {"presence_penalty": 2.0},
                  {"repetition_penalty": 1.5}):
        assert answer(**extra) != plain, extra
    for field, value in (("frequency_penalty", -2.5), ("presence_penalty", 3),
                         ("repetition_penalty", 0), ("repetition_penalty", 1e-38),
                         ("repetition_penalty", "x"),
                         ("min_p", 1.5)):
        with pytest.raises(openai.BadRequestError) as err:
            answer(**{field: value})
        assert err.value.body["param"] == field, (field, value)


def test_logit_bias_outside_the_vocabulary_or_range_is_a_400(client: Any) -> None:
    for bias in ({"999999999": 1}, {"5": 101}, {"x": 1}):
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=1,
                                           logit_bias=bias)
        assert err.value.body["param"] == "logit_bias", bias


@pytest.mark.parametrize(("field", "value"), [
    ("tools", "notalist"), ("response_format", 42), ("stop", 5), ("n", "x"),
    ("logprobs", "yes"), ("metadata", 3), ("user", 7), ("audio", {"voice": "alloy"}),
    ("store", True), ("reasoning_effort", "low"), ("frequency_penalty", 2.5),
])
def test_chat_fields_refused_or_malformed_are_400_naming_them(client: Any, field: str,
                                                               value: Any) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=1,
                                       extra_body={field: value})
    assert err.value.body["param"] == field, json.dumps(err.value.body)
