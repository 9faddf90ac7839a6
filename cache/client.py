"""The gateway's side of the result cache: look up (beside routing, gateway/cache_route.py), store
after a fresh answer.

Contract:
- `lookup` asks `kvmesh.cache.get` with single-flight waiting (or, `wait` False, a `busy` miss
  instead of the wait). Any failure (no cache actor, timeout, a bad reply) is a plain miss: the
  cache never fails a request.
- `store_soon` / `release_soon` publish a `CachePut` without waiting; only the leader of a key
  stores (it is the one the actor expects a put from), and a leader that did not finish
  releases the lease so a waiter computes instead. While it leads, the client renews the key's
  lease every `renew_s` (one task renews them all), so a long answer keeps it and a
  gateway that died loses it within the cache's `lease`. An answer over the NATS max payload is
  put in parts, each within it (`split_puts`); one that cannot be put (a single chunk too
  large, NATS down) releases the lease instead and logs a warning, so nobody waits out the
  lease. `close` (the gateway's cleanup, after its streams ended) stops the renewing and
  releases any lease still held, so no waiter waits out a lease its gateway left behind.
- A hit stored in parts is fetched part by part and handed over whole; a part that cannot be
  had makes the lookup a plain miss.
- `ReplayStream` serves a cached answer through the same interface as a `RequestStream`, so the
  gateway writes it exactly as it would write a fresh one (JSON or SSE).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any

from cache.telemetry import cache_looked_up, client_metrics
from kvmesh import wire
from kvmesh.actor import Actor, MeshError
from kvmesh.wire import Accepted, CacheGet, CacheHit, CacheMiss, CachePut, Chunk
from telemetry.tracing import traced

log = logging.getLogger("kvmesh.gateway.cache")
DEFAULT_MAX_PAYLOAD = 1 << 20  # nats-server's default, when the connection has not said
MAX_LEAD_S = 1800.0  # the longest a lease is renewed: longer answers are computed twice
HEADROOM = 16 << 10  # a put's own fields and its NATS headers (trace context, request id)


class ResultCacheClient:
    def __init__(self, actor: Actor, lookup_timeout: float, lead_wait: float,
                 renew_s: float = 5.0) -> None:
        self.actor = actor
        self.lookup_timeout = lookup_timeout
        self.lead_wait = lead_wait
        self.renew_s = renew_s
        self.leading: dict[str, float] = {}  # keys whose lease this client holds -> when
        # renewing stops (a key never stored nor released, a bug, cannot hold its lease long)
        self._renewer: asyncio.Future[None] | None = None
        self._background: set[asyncio.Future[None]] = set()
        client_metrics()  # exported from the gateway's start, before any lookup

    @traced("cache.lookup", observe=cache_looked_up)
    async def lookup(self, key: str, wait: bool = True) -> CacheHit | CacheMiss:
        """The stored answer, or a miss (leading or not); with `wait` False, a key another
        caller is computing answers `CacheMiss(busy=True)` at once instead of waiting for it."""
        try:
            found = await self.actor.request(
                wire.CACHE_GET,
                CacheGet(key, self.lead_wait, wait=wait),
                self.lookup_timeout + (self.lead_wait if wait else 0.0),
                CacheHit,
                CacheMiss,
            )
            if isinstance(found, CacheHit) and found.parts > 1:
                return await self._rest(found)
            if isinstance(found, CacheMiss) and found.lead:
                self._lead(key)
            return found
        except (MeshError, wire.WireError) as exc:
            log.debug("cache lookup failed (%s): a miss", exc)
            return CacheMiss(key, lead=False)

    async def _rest(self, first: CacheHit) -> CacheHit | CacheMiss:
        """The whole answer whose part 0 is `first`, or a miss if a part is gone."""
        chunks = list(first.chunks)
        for part in range(1, first.parts):
            got = await self.actor.request(wire.CACHE_GET, CacheGet(first.key, part=part),
                                           self.lookup_timeout, CacheHit, CacheMiss)
            if not isinstance(got, CacheHit):
                return CacheMiss(first.key, lead=False)
            chunks += got.chunks
        return CacheHit(first.key, chunks)

    def store_soon(self, key: str, chunks: list[Chunk]) -> None:
        self.leading.pop(key, None)
        self._soon(self._store(key, chunks))

    def release_soon(self, key: str) -> None:
        self.leading.pop(key, None)
        self._soon(self._release(key))

    def _lead(self, key: str) -> None:
        self.leading[key] = time.monotonic() + MAX_LEAD_S
        if self._renewer is None:
            self._renewer = asyncio.ensure_future(self._renew_leases())

    async def _renew_leases(self) -> None:
        """Every `renew_s`, one `CachePut(renew=True)` per key led (none while none is)."""
        while True:
            await asyncio.sleep(self.renew_s)
            now = time.monotonic()
            for key, until in list(self.leading.items()):
                if now > until:
                    del self.leading[key]
                    continue
                try:
                    await self.actor.publish(wire.CACHE_PUT, CachePut(key, [], renew=True))
                except Exception as exc:  # the lease expires by itself: others compute
                    log.debug("renewing the cache lease of %s failed (%s)", key, exc)

    async def close(self) -> None:
        """Stop renewing; release every lease still held and wait (briefly) for the puts."""
        if self._renewer is not None:
            self._renewer.cancel()
        for key in list(self.leading):
            self.release_soon(key)
        if self._background:
            await asyncio.wait(self._background, timeout=self.lookup_timeout)

    async def _store(self, key: str, chunks: list[Chunk]) -> None:
        nc = self.actor.nc
        limit = (nc.max_payload if nc is not None else 0) or DEFAULT_MAX_PAYLOAD
        puts = split_puts(key, chunks, limit - HEADROOM)
        if not puts:
            log.warning("answer %s has a chunk over the NATS max payload: not cached", key)
            await self._release(key)
            return
        try:
            for put in puts:
                await self.actor.publish(wire.CACHE_PUT, put)
        except Exception as exc:
            log.warning("storing answer %s failed (%s): releasing its lease", key, exc)
            await self._release(key)

    async def _release(self, key: str) -> None:
        try:
            await self.actor.publish(wire.CACHE_PUT, CachePut(key, []))
        except Exception as exc:
            log.warning("releasing the cache lease of %s failed (%s): it expires by itself",
                        key, exc)

    def _soon(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def split_puts(key: str, chunks: list[Chunk], budget: int) -> list[CachePut]:
    """`chunks` as puts whose frames are each at most about `budget` bytes, in order; [] when
    one chunk alone is over it (it cannot be stored)."""
    groups: list[list[Chunk]] = [[]]
    size = 0
    for chunk in chunks:
        n = len(wire.encode(chunk))
        if n > budget:
            return []
        if groups[-1] and size + n > budget:
            groups.append([])
            size = 0
        groups[-1].append(chunk)
        size += n
    return [CachePut(key, g, i, len(groups)) for i, g in enumerate(groups)]


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
