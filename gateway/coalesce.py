"""Coalescing deltas: when a client reads slower than the engine writes, the chunks that piled
up since its last write go out as one delta per choice (OpenAI clients accept multi-token
deltas), so a slow client costs one event per write, not one per token.
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
