"""vLLM's `return_tokens_as_token_ids`: logprob entries name each token `token_id:<id>`
instead of its text, so a client gets the exact ids back (an RL trainer scoring the tokens
it sampled), where texts cannot say them (a character split over tokens shows U+FFFD in
each; two tokens may share a text).

Contract: `named_by_id(chunks)` gives the chunks with every logprob entry's token (chosen,
alternatives, an echoed prompt's) renamed so and its bytes those of the new name, as vLLM
does; text, ids and numbers unchanged. The chunks given are never changed (the result cache
may hold them): changed ones are copies.
"""

from __future__ import annotations

import dataclasses

from kvmesh.wire import Chunk, Logprob, PromptEcho, TopLogprob


def named_by_id(chunks: list[Chunk]) -> list[Chunk]:
    return [_chunk(c) if c.logprobs or c.prompt is not None else c for c in chunks]


def _name(token_id: int) -> str:
    return f"token_id:{token_id}"


def _chunk(c: Chunk) -> Chunk:
    lps = None if c.logprobs is None else [_entry(lp) for lp in c.logprobs]
    return dataclasses.replace(c, logprobs=lps, prompt=c.prompt and _echo(c.prompt))


def _entry(lp: Logprob) -> Logprob:
    return Logprob(lp.token_id, _name(lp.token_id), lp.logprob,
                   [TopLogprob(t.token_id, _name(t.token_id), t.logprob) for t in lp.top])


def _echo(p: PromptEcho) -> PromptEcho:
    if p.logprobs is None or len(p.token_ids) != len(p.tokens):  # an older worker's: no ids
        return p
    return dataclasses.replace(p, tokens=[_name(t) for t in p.token_ids],
                               logprobs=[_entry(lp) for lp in p.logprobs])
