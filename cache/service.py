"""The result-cache actor: whole answers of deterministic requests in Redis, single-flight.

Contract (subjects in `kvmesh.wire`, queue group "cache", so replicas share the work):
- `CacheGet(key, lead_wait)` on `CACHE_GET`: a stored answer comes back as `CacheHit`. On a
  miss, with `lead_wait` > 0, the caller either takes the key's lease (`CacheMiss(lead=True)`:
  compute it, then put) or, when another caller holds the lease, waits up to `lead_wait` for
  that caller's put and gets its `CacheHit`. A lease given up or expired (`lease` seconds) goes
  to the next waiter. `CacheMiss(lead=False)`: compute, do not put.
- `CachePut(key, chunks)` on `CACHE_PUT`: stores the chunks for `ttl` seconds and frees the
  lease; with no chunks it only frees the lease (the leader failed). No reply is needed.
- `Ping` on `CACHE_STATS` answers `CacheStats` (this replica's counters).
- Redis down or slow (over `redis_timeout`) is a miss and a log line, never an error: callers
  compute as if there were no cache. After a Redis error the actor skips Redis for a second.
- Redis layout: `kvmesh:rc:<key>` = the encoded `CacheHit`; `kvmesh:rc:lease:<key>` = lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from kvmesh import wire
from kvmesh.actor import Actor
from kvmesh.config import CacheConfig, load
from kvmesh.wire import CacheGet, CacheHit, CacheMiss, CachePut, CacheStats, Message, Ping
from telemetry import metrics, run_service
from telemetry.tracing import traced

log = logging.getLogger("kvmesh.cache")
POLL_S = 0.05  # how often a waiter checks Redis for a leader's put made on another replica
REDIS_DOWN_S = 1.0  # after an error, skip Redis this long (a miss costs nothing then)
RedisFailure = (redis.exceptions.RedisError, OSError, asyncio.TimeoutError)


class RedisDown(Exception):
    pass


class ResultCache(Actor):
    def __init__(self, cfg: CacheConfig) -> None:
        super().__init__("cache", cfg.nats_url, cfg.grace_period)
        self.cfg = cfg
        self.redis = aioredis.from_url(
            cfg.redis_url,
            socket_timeout=cfg.redis_timeout,
            socket_connect_timeout=cfg.redis_timeout,
        )
        self.stats = CacheStats()
        self._ready: dict[str, asyncio.Event] = {}  # keys put through this replica
        self._down_until = 0.0

    async def start(self) -> None:
        await self.connect()
        await self.serve(
            wire.CACHE_GET,
            (CacheGet,),
            self._get,
            queue="cache",
            max_concurrency=self.cfg.max_concurrency,
        )
        await self.serve(
            wire.CACHE_PUT,
            (CachePut,),
            self._put,
            queue="cache",
            max_concurrency=self.cfg.max_concurrency,
        )
        await self.serve(wire.CACHE_STATS, (Ping,), self._stats, queue="cache")
        self.on_drain.append(self._close_redis)
        metrics.cache().watch(lambda: self.stats)
        log.info("result cache on %s (ttl %gs)", self.cfg.redis_url, self.cfg.ttl)

    async def _close_redis(self) -> None:
        await self.redis.aclose()

    # -- Redis, with "down" turned into RedisDown --------------------------------------------

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if time.monotonic() < self._down_until:
            raise RedisDown("redis marked down")
        try:
            return await asyncio.wait_for(
                getattr(self.redis, method)(*args, **kwargs), self.cfg.redis_timeout * 2
            )
        except RedisFailure as exc:
            self._down_until = time.monotonic() + REDIS_DOWN_S
            self.stats.errors += 1
            log.warning("redis %s failed (%s): serving misses for %gs", method, exc, REDIS_DOWN_S)
            raise RedisDown(str(exc)) from None

    async def _load(self, key: str) -> CacheHit | None:
        data = await self._call("get", "kvmesh:rc:" + key)
        if data is None:
            return None
        try:
            return wire.decode(data, CacheHit)
        except wire.WireError as exc:
            log.warning("dropping undecodable cache entry %s: %s", key, exc)
            return None

    # -- handlers --------------------------------------------------------------------------

    async def _get(self, msg: Message, raw: Any) -> Message:
        assert isinstance(msg, CacheGet)
        start = time.perf_counter()
        try:
            reply = await self._lookup(msg)
        except RedisDown:
            self.stats.misses += 1
            reply = CacheMiss(msg.key, lead=False)
        result = "hit" if isinstance(reply, CacheHit) else "miss"
        metrics.cache().lookup_latency.labels(result).observe(time.perf_counter() - start)
        return reply

    async def _lookup(self, msg: CacheGet) -> Message:
        key = msg.key
        hit = await self._load(key)
        if hit is not None:
            self.stats.hits += 1
            return hit
        if msg.lead_wait <= 0:
            self.stats.misses += 1
            return CacheMiss(key, lead=False)
        deadline = time.monotonic() + msg.lead_wait
        waited = False
        while True:
            if waited:  # is the leader's answer there now?
                hit = await self._load(key)
                if hit is not None:
                    self.stats.hits += 1
                    self.stats.waited_hits += 1
                    return hit
            lease = "kvmesh:rc:lease:" + key
            if await self._call("set", lease, b"1", nx=True, px=int(self.cfg.lease * 1000)):
                hit = await self._load(key)  # a leader may have put and let go just now
                if hit is not None:
                    await self._call("delete", lease)
                    self.stats.hits += 1
                    self.stats.waited_hits += waited
                    return hit
                self.stats.misses += 1
                self.stats.leads += 1
                return CacheMiss(key, lead=True)
            if time.monotonic() > deadline:
                self.stats.misses += 1
                return CacheMiss(key, lead=False)
            event = self._ready.setdefault(key, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), POLL_S)
            waited = True

    @traced("cache.store")
    async def _put(self, msg: Message, raw: Any) -> None:
        assert isinstance(msg, CachePut)
        key = msg.key
        try:
            if msg.chunks:
                entry = wire.encode(CacheHit(key, msg.chunks))
                await self._call("set", "kvmesh:rc:" + key, entry, px=int(self.cfg.ttl * 1000))
                self.stats.puts += 1
            await self._call("delete", "kvmesh:rc:lease:" + key)
        except RedisDown:
            pass
        finally:
            event = self._ready.pop(key, None)
            if event is not None:
                event.set()

    async def _stats(self, msg: Message, raw: Any) -> Message:
        return self.stats


async def serve(cfg: CacheConfig) -> None:
    actor = ResultCache(cfg)
    await actor.start()
    await actor.run_until_stopped()


def main(argv: Sequence[str] | None = None) -> int:
    cfg = load(CacheConfig, sys.argv[1:] if argv is None else argv)
    return run_service("cache", f"cache-{os.getpid()}", serve(cfg), cfg.log_level,
                       cfg.metrics_port)


if __name__ == "__main__":
    sys.exit(main())
