"""Coalescing deltas: several chunks of one request joined into one chunk per choice (OpenAI
clients accept multi-token deltas). The gateway does it when a client reads slower than the
engine writes, so a slow client costs one event per write, not one per token; a worker with a
`stream_interval` above 1 does it before sending (inference/stream_interval.py); an answer
stored in the result cache is coalesced in bounded runs (`compact`): fewer, larger chunks to
encode, send, keep in Redis and replay.
"""

from __future__ import annotations

from kvmesh.wire import Chunk


def coalesce(chunks: list[Chunk]) -> list[Chunk]:
    """One chunk per choice, in order of first appearance: texts, token ids and logprobs
    joined in order; the last `seq`, finish reason and usage kept, and an echoed prompt. A
    single chunk is returned as is (the common case at low load)."""
    if len(chunks) < 2:
        return chunks
    merged: dict[int, Chunk] = {}
    for c in chunks:
        m = merged.get(c.index)
        if m is None:
            merged[c.index] = Chunk(c.request_id, c.seq, c.index, c.text, list(c.token_ids),
                                    list(c.logprobs) if c.logprobs is not None else None,
                                    c.finish_reason, c.usage, c.prompt)
            continue
        m.seq = c.seq
        m.text += c.text
        m.token_ids.extend(c.token_ids)
        if c.logprobs is not None:
            m.logprobs = [*(m.logprobs or []), *c.logprobs]
        m.finish_reason = c.finish_reason or m.finish_reason
        m.usage = c.usage or m.usage
        m.prompt = m.prompt or c.prompt
    return list(merged.values())


# A stored answer's runs: small enough that each stays far inside a cache put's NATS payload
# (1 MiB by default; 64 tokens with 20 top logprobs each encode to about 150 KB), large enough
# that a 128-token answer is stored, sent and replayed as 2 chunks instead of 128.
RUN_TOKENS = 64
RUN_CHARS = 64 << 10


def compact(chunks: list[Chunk]) -> list[Chunk]:
    """`chunks` (a finished answer, in order) coalesced run by run: each run is the longest
    stretch of at most `RUN_TOKENS` tokens and `RUN_CHARS` characters of text (a longer chunk
    is a run of its own); a chunk that echoes the prompt is always one of its own. The answer
    read from the result is the same: per choice, the same text, tokens, logprobs, finish
    reason, and the usage and prompt."""
    out: list[Chunk] = []
    run: list[Chunk] = []
    tokens = chars = 0
    for c in chunks:
        if run and (c.prompt is not None or run[-1].prompt is not None
                    or tokens + len(c.token_ids) > RUN_TOKENS or chars + len(c.text) > RUN_CHARS):
            out += coalesce(run)
            run, tokens, chars = [], 0, 0
        run.append(c)
        tokens += len(c.token_ids)
        chars += len(c.text)
    return out + coalesce(run)
