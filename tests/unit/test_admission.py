"""How many tokens an admission reserves from a tenant's `tpm` (gateway/admission.py)."""

from __future__ import annotations

from gateway.admission import prompt_estimate, reservation
from gateway.embeddings_request import parse_embeddings
from gateway.openai_request import parse_chat, parse_completion
from kvmesh.wire import Identity


def _ident(tpm: int) -> Identity:
    return Identity("t", "k", ["*"], tpm=tpm)


def test_the_reservation_is_the_prompt_plus_every_token_the_request_may_make() -> None:
    req = parse_completion({"model": "m", "prompt": "x" * 300, "max_tokens": 20, "n": 2})
    assert prompt_estimate(req) == 101
    assert reservation(req, _ident(10_000)) == 101 + 2 * 20
    assert reservation(req, _ident(100)) == 100  # never more than the whole budget
    assert reservation(req, _ident(0)) == 0  # no tpm: nothing to reserve


def test_without_max_tokens_the_rest_of_the_context_is_reserved() -> None:
    req = parse_chat({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert req.max_tokens is None
    prompt = prompt_estimate(req)
    assert reservation(req, _ident(10_000), context_len=2048) == 2048
    assert reservation(req, _ident(10_000)) == 10_000  # context unknown: the whole budget
    assert prompt < 10


def test_token_ids_count_exactly() -> None:
    req = parse_completion({"model": "m", "prompt": [1, 2, 3, 4], "max_tokens": 1})
    assert prompt_estimate(req) == 4 and reservation(req, _ident(50)) == 5


def test_a_truncated_prompt_reserves_what_is_kept() -> None:
    """A 60,000-byte prompt cut to its last 100 tokens reserves 100, not ~15,000 (audit d)."""
    body = {"model": "m", "prompt": " one" * 15_000, "max_tokens": 5}
    req = parse_completion({**body, "truncate_prompt_tokens": 100})
    assert prompt_estimate(req) == 100 and reservation(req, _ident(3000)) == 105
    batch = parse_completion({**body, "prompt": ["x" * 4000, [1, 2]], "truncate_prompt_tokens": 50})
    assert prompt_estimate(batch) == 100  # at most 50 per prompt
    rest = parse_completion({**body, "truncate_prompt_tokens": -1})
    assert prompt_estimate(rest, context_len=2048) == 2048
    assert prompt_estimate(rest) == prompt_estimate(parse_completion(body))  # context unknown
    embed = parse_embeddings({"model": "m", "input": ["x" * 4000] * 3,
                              "truncate_prompt_tokens": 10})
    assert prompt_estimate(embed) == 30


def test_a_prompt_longer_than_the_context_reserves_the_context_at_most() -> None:
    """Its 400 (`context_length_exceeded`) must not be a 429 first (audit i)."""
    req = parse_completion({"model": "m", "prompt": "hello " * 9000, "max_tokens": 20})
    assert prompt_estimate(req, context_len=8192) == 8192
    assert reservation(req, _ident(20_000), context_len=8192) == 8192 + 20
    assert prompt_estimate(req) == 18_001  # context unknown: the estimate as it is
