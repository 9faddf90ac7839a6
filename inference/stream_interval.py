"""A worker's `stream_interval` (SGLang's and vLLM's `--stream-interval`): a request's chunks
are sent every `interval` tokens instead of every token, so the worker's frames, the gateway's
SSE events and the client's reads shrink by that factor when many streams share a host.

Contract of `Held.take`: a chunk waits with the request's earlier unsent chunks until they
hold `interval` tokens, except that it goes at once, with them, while none of the request's
text has gone yet (time to first token never waits, even when the first token is half a
character and shows nothing), and when it echoes the prompt, finishes its choice, or ends the
request. What is sent is the held chunks coalesced (`kvmesh.coalesce.coalesce`: one chunk
per choice, text, tokens and logprobs joined in order), with the ending choice's chunk last,
so the request's usage stays on its last chunk. The worker calls it only when `interval` is
above 1: with 1 every chunk goes as it comes, with no holding on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kvmesh.coalesce import coalesce
from kvmesh.wire import Chunk


@dataclass
class Held:
    """One request's chunks not yet sent."""

    chunks: list[Chunk] = field(default_factory=list)
    tokens: int = 0
    streamed: bool = False  # some text of this request has been sent

    def take(self, chunk: Chunk, interval: int, ends: bool) -> list[Chunk]:
        """Hold `chunk`; return what to send now, in order (maybe nothing). `ends`: the
        request's last chunk (the one that carries its usage)."""
        self.chunks.append(chunk)
        self.tokens += len(chunk.token_ids)
        if (self.streamed and self.tokens < interval and not ends
                and chunk.finish_reason is None and chunk.prompt is None):
            return []
        out = coalesce(self.chunks)
        if ends and len(out) > 1:  # stable: only the ending choice's chunk moves, to the end
            out.sort(key=lambda c: c.index == chunk.index)
        self.streamed = self.streamed or any(c.text for c in out)
        self.chunks, self.tokens = [], 0
        return out
