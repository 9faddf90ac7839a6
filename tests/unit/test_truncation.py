"""Responses' `truncation: auto`: the router drops a conversation's oldest turns until its
prompt fits (router/truncation.py), rendered and tokenized as served (the real SmolLM2 chat
template and tokenizer); the gateway's field and the result-cache key. vLLM's
`truncate_prompt_tokens`: the size kept and the field on every endpoint that takes it (through
the mesh in tests/integration/test_truncate_prompt_tokens.py)."""

from __future__ import annotations

import pytest

from cache.key import cache_key
from gateway.embeddings_request import parse_embeddings
from gateway.errors import ApiError
from gateway.openai_request import parse_chat, parse_completion
from gateway.responses_request import parse_responses
from kvmesh.wire import ChatMessage, ToolCall
from router.truncation import cut_points, tail_size, truncate

SYSTEM = ChatMessage("system", "You answer briefly.")


def _turns(n: int) -> list[ChatMessage]:
    """n exchanges, each a question, a tool call and its result, and an answer."""
    out: list[ChatMessage] = []
    for i in range(n):
        call = ToolCall(f"c{i}", "lookup", f'{{"q": {i}}}')
        out += [ChatMessage("user", f"Question {i}: " + "words " * 30),
                ChatMessage("assistant", "", tool_calls=[call]),
                ChatMessage("tool", f"result {i}", tool_call_id=f"c{i}"),
                ChatMessage("assistant", f"Answer {i}.")]
    return out


@pytest.fixture(scope="module")
def prompts(smollm_gguf):
    from router.tokenize import PromptTokenizer

    return PromptTokenizer.load(str(smollm_gguf))


def test_a_kept_tail_starts_at_a_user_turn_after_the_instructions() -> None:
    msgs = [SYSTEM, ChatMessage("developer", "Be kind."), *_turns(3)]
    assert cut_points(msgs) == [2, 6, 10]
    assert cut_points([SYSTEM]) == [1]  # the whole: nothing to keep, truncate says None


def test_turns_before_the_first_user_message_go_with_the_first_cut(prompts) -> None:
    """A conversation's stored items may start with an answer (the audit: a long assistant
    item, then "hi"): the whole is the first candidate, then the tails from each user turn,
    so the long answer is dropped where the old cut kept whatever came before the first
    user message."""
    msgs = [SYSTEM, ChatMessage("assistant", "pear " * 400), ChatMessage("user", "hi"),
            ChatMessage("assistant", "ok"), ChatMessage("user", "q")]
    assert cut_points(msgs) == [1, 2, 4]
    encode = lambda m: prompts.encode_chat(m, None)  # noqa: E731
    ids = truncate(msgs, encode, lambda n: n <= 100)
    assert ids == encode([SYSTEM, *msgs[2:]])
    assert truncate([SYSTEM, ChatMessage("assistant", "only an answer")], encode,
                    lambda n: True) is None  # no user message to keep


@pytest.mark.parametrize("budget_turns", [1, 2, 4])
def test_the_longest_tail_that_fits_is_kept(prompts, budget_turns) -> None:
    msgs = [SYSTEM, *_turns(6), ChatMessage("user", "And now?")]
    encode = lambda m: prompts.encode_chat(m, None)  # noqa: E731
    tails = [[SYSTEM, *msgs[i:]] for i in cut_points(msgs)]  # longest first
    budget = len(encode(tails[-budget_turns]))  # exactly the last `budget_turns` user turns
    ids = truncate(msgs, encode, lambda n: n <= budget)
    assert ids == encode(tails[-budget_turns])
    assert len(encode(tails[-budget_turns - 1])) > budget  # one more turn would not fit
    assert prompts.tokenizer.decode(ids).count("You answer briefly.") == 1  # instructions kept


def test_nothing_fits_when_the_last_turn_alone_is_too_long(prompts) -> None:
    msgs = [SYSTEM, *_turns(2), ChatMessage("user", "long " * 400)]
    assert truncate(msgs, lambda m: prompts.encode_chat(m, None), lambda n: n <= 100) is None


def test_the_field_and_the_cache_key() -> None:
    body = {"model": "m", "input": "hi"}
    assert parse_responses(body).truncate is False
    assert parse_responses({**body, "truncation": "disabled"}).truncate is False
    auto = parse_responses({**body, "truncation": "auto"})
    assert auto.truncate is True
    # an answer where the same prompt untruncated is a 400: never served from the other's entry
    assert cache_key(auto, "t", "r") != cache_key(parse_responses(body), "t", "r")
    for bad, code in (("sometimes", "invalid_value"), (1, "invalid_type")):
        with pytest.raises(ApiError) as err:
            parse_responses({**body, "truncation": bad})
        assert err.value.param == "truncation" and err.value.code == code


@pytest.mark.parametrize("keep, reserved, kept", [
    (5, 1, 5), (100, 50, 100), (100, 1, 100),  # as asked, up to the context
    (-1, 1, 99), (-1, 30, 70), (-1, 100, 1), (-1, 500, 1),  # the most that fit, at least one
])
def test_the_size_kept(keep: int, reserved: int, kept: int) -> None:
    assert tail_size(keep, 100, reserved) == kept


def test_a_size_over_the_context_is_refused() -> None:
    with pytest.raises(ValueError, match=r"truncate_prompt_tokens \(101\) is greater"):
        tail_size(101, 100, 1)
    assert tail_size(99, 100, 1, most=99) == 99
    with pytest.raises(ValueError, match=r"limit \(99 tokens\)"):
        tail_size(100, 100, 1, most=99)  # an embedding input: the context less one


BODIES = [(parse_completion, {"model": "m", "prompt": "hi"}),
          (parse_chat, {"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
          (parse_embeddings, {"model": "m", "input": "hi"})]


@pytest.mark.parametrize("parse, body", BODIES)
def test_truncate_prompt_tokens_reaches_the_wire(parse, body) -> None:
    assert parse(body).to_wire("r", "inbox").truncate_prompt_tokens is None
    for keep in (-1, 1, 4096):
        assert parse({**body, "truncate_prompt_tokens": keep}).to_wire(
            "r", "inbox").truncate_prompt_tokens == keep


@pytest.mark.parametrize("parse, body", BODIES)
@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "3"])
def test_truncate_prompt_tokens_not_minus_one_nor_positive_is_a_400(parse, body, bad) -> None:
    with pytest.raises(ApiError) as err:
        parse({**body, "truncate_prompt_tokens": bad})
    assert err.value.status == 400 and err.value.param == "truncate_prompt_tokens"
