"""The gateway's side of the result cache: look up before routing, store after a fresh answer.

Contract:
- `lookup` asks `kvmesh.cache.get` with single-flight waiting. Any failure (no cache actor,
  timeout, a bad reply) is a plain miss: the cache never fails a request.
- `store_soon` / `release_soon` publish a `CachePut` without waiting; only the leader of a key
  stores (it is the one the actor expects a put from), and a leader that did not finish
  releases the lease so a waiter computes instead.
- `ReplayStream` serves a cached answer through the same interface as a `RequestStream`, so the
  gateway writes it exactly as it would write a fresh one (JSON or SSE).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from typing import Any

from kvmesh import wire
from kvmesh.actor import Actor, MeshError
from kvmesh.wire import Accepted, CacheGet, CacheHit, CacheMiss, CachePut, Chunk
from telemetry.services import cache_looked_up
from telemetry.tracing import traced

log = logging.getLogger("kvmesh.gateway.cache")


class ResultCacheClient:
    def __init__(self, actor: Actor, lookup_timeout: float, lead_wait: float) -> None:
        self.actor = actor
        self.lookup_timeout = lookup_timeout
        self.lead_wait = lead_wait
        self._background: set[asyncio.Future[None]] = set()

    @traced("cache.lookup", observe=cache_looked_up)
    async def lookup(self, key: str) -> CacheHit | CacheMiss:
        try:
            return await self.actor.request(
                wire.CACHE_GET,
                CacheGet(key, self.lead_wait),
                self.lookup_timeout + self.lead_wait,
                CacheHit,
                CacheMiss,
            )
        except (MeshError, wire.WireError) as exc:
            log.debug("cache lookup failed (%s): a miss", exc)
            return CacheMiss(key, lead=False)

    def store_soon(self, key: str, chunks: list[Chunk]) -> None:
        self._soon(CachePut(key, chunks))

    def release_soon(self, key: str) -> None:
        self._soon(CachePut(key, []))

    def _soon(self, put: CachePut) -> None:
        async def send() -> None:
            with contextlib.suppress(Exception):
                await self.actor.publish(wire.CACHE_PUT, put)

        task = asyncio.ensure_future(send())
        self._background.add(task)
        task.add_done_callback(self._background.discard)


class ReplayStream:
    """A cached answer's chunks, read like a live `RequestStream`: one batch holding them all."""

    worker_id = "cache"

    def __init__(self, hit: CacheHit, request_id: str) -> None:
        self._chunks = [replace(c, request_id=request_id) for c in hit.chunks]
        self.usage = next((c.usage for c in hit.chunks if c.usage is not None), None)
        self.accepted = Accepted(request_id, "cache", self.usage.prompt_tokens if self.usage else 0)
        self.chunks: list[Chunk] | None = None
        self.tokens = sum(len(c.token_ids) for c in self._chunks)
        self.done = not self._chunks
        self.completed = False

    async def batch(self) -> list[Chunk]:
        out, self._chunks = self._chunks, []
        self.done = True
        self.completed = self.completed or bool(out)
        return out

    def close(self) -> None:
        pass


def route_headers(stream: Any) -> dict[str, str]:
    """Response headers naming where the answer came from."""
    if isinstance(stream, ReplayStream):
        return {}
    acc = stream.accepted
    return {"x-kvmesh-worker": acc.worker_id, "x-kvmesh-prefix-overlap": str(acc.prefix_overlap)}
