"""The result-cache actor: whole answers of deterministic requests in Redis, single-flight.

Contract (subjects in `kvmesh.wire`, queue group "cache", so replicas share the work):
- `CacheGet(key, lead_wait)` on `CACHE_GET`: a stored answer comes back as `CacheHit`. On a
  miss, with `lead_wait` > 0, the caller either takes the key's lease (`CacheMiss(lead=True)`:
  compute it, then put) or, when another caller holds the lease, waits up to `lead_wait` for
  that caller's put and gets its `CacheHit`. A lease given up or expired (`lease` seconds) goes
  to the next waiter. `CacheMiss(lead=False)`: compute, do not put. With `wait` False the
  caller is not kept waiting for another's lease: `CacheMiss(busy=True)` at once.
- `CachePut(key, chunks)` on `CACHE_PUT`: stores the chunks for `ttl` seconds and frees the
  lease; with no chunks it only frees the lease (the leader failed). No reply is needed.
  An answer over the NATS max payload comes in `parts` puts (any replica may get any part);
  each part is stored as it comes and the lease is freed when the last one is in. A hit on
  such an answer is part 0 with `parts` set; the reader asks for the others with
  `CacheGet(part=i)`. A stored answer with a part missing (expired, or never put) is a miss.
- A put that cannot be stored (Redis down) still frees what it can and logs a warning.
- `Ping` on `CACHE_STATS` answers `CacheStats` (this replica's counters).
- Redis down or slow (over `redis_timeout`) is a miss and a log line, never an error: callers
  compute as if there were no cache. After a Redis error the actor skips Redis for a second.
- The same actor serves the `/v1/responses` store on the same Redis (cache/responses_store.py)
  and the `/v1/conversations` store (cache/conversations_store.py).
- Redis layout: `kvmesh:rc:<key>` = the encoded `CacheHit` (part 0), `kvmesh:rc:<key>#<i>`
  = part i; `kvmesh:rc:lease:<key>` = lease; `kvmesh:rc:parts:<key>` = parts stored so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.exceptions

from cache import telemetry as cache_telemetry
from cache.conversations_store import ConversationStore
from cache.response_events import ResponseEventLogs
from cache.responses_store import ResponseStore
from kvmesh import wire
from kvmesh.actor import Actor
from kvmesh.config import CacheConfig, load
from kvmesh.redis_pool import redis_client
from kvmesh.wire import CacheGet, CacheHit, CacheMiss, CachePut, CacheStats, Message, Ping
from telemetry import propagation, run_service
from telemetry.tracing import traced

log = logging.getLogger("kvmesh.cache")

# KEYS: the entry's first part, its lease; ARGV: the lease's life in ms. {1, entry} when the
# entry is there, else {0, 1} when this call took the lease, {0, 0} when another holds it.
_READ_OR_CLAIM = """
local entry = redis.call('GET', KEYS[1])
if entry then return {1, entry} end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then return {0, 1} end
return {0, 0}
"""
POLL_S = 0.05  # how often a waiter checks Redis for a leader's put made on another replica
REDIS_DOWN_S = 1.0  # after an error, skip Redis this long (a miss costs nothing then)
RedisFailure = (redis.exceptions.RedisError, OSError, asyncio.TimeoutError)


class RedisDown(Exception):
    pass


class ResultCache(Actor):
    def __init__(self, cfg: CacheConfig) -> None:
        super().__init__("cache", cfg.nats_url, cfg.grace_period, propagation)
        self.cfg = cfg
        self.redis = redis_client(cfg.redis_url, cfg.redis_timeout, cfg.max_concurrency)
        self._read_or_claim = self.redis.register_script(_READ_OR_CLAIM)
        self.stats = CacheStats()
        # Keys lookups here wait on, each with its event (set by a put through this replica)
        # and how many wait: an event lives only while someone waits on it.
        self._ready: dict[str, asyncio.Event] = {}
        self._waiting: dict[str, int] = {}
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
        store = ResponseStore(self, self.cfg, self.redis)
        await store.start()
        await ResponseEventLogs(store).start()
        await ConversationStore(store).start()
        self.on_drain.append(self._close_redis)
        cache_telemetry.metrics().watch(lambda: self.stats)
        log.info("result cache on %s (ttl %gs)", self.cfg.redis_url, self.cfg.ttl)

    async def _close_redis(self) -> None:
        await self.redis.aclose()

    # -- Redis, with "down" turned into RedisDown --------------------------------------------

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await self._run(method, lambda: getattr(self.redis, method)(*args, **kwargs))

    async def _run(self, what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        if time.monotonic() < self._down_until:
            raise RedisDown("redis marked down")
        try:
            return await asyncio.wait_for(call(), self.cfg.redis_timeout * 2)
        except RedisFailure as exc:
            self._down_until = time.monotonic() + REDIS_DOWN_S
            self.stats.errors += 1
            log.warning("redis %s failed (%s): serving misses for %gs", what, exc, REDIS_DOWN_S)
            raise RedisDown(str(exc)) from None

    async def _load(self, key: str, part: int = 0) -> CacheHit | None:
        """Part `part` of the stored answer; part 0 only when every part is there."""
        return await self._complete(key, await self._call("get", _entry(key, part)), part)

    async def _complete(self, key: str, data: bytes | None, part: int = 0) -> CacheHit | None:
        """The entry `data` read for part `part` of `key`, decoded; for part 0 of a
        multi-part answer, only when every other part is there too."""
        if data is None:
            return None
        try:
            hit = wire.decode(data, CacheHit)
        except wire.WireError as exc:
            log.warning("dropping undecodable cache entry %s: %s", key, exc)
            return None
        if part == 0 and hit.parts > 1:
            others = [_entry(key, i) for i in range(1, hit.parts)]
            if await self._call("exists", *others) != len(others):
                return None  # still being put, or a part expired first
        return hit

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
        cache_telemetry.metrics().lookup_latency.labels(result).observe(time.perf_counter() - start)
        return reply

    async def _lookup(self, msg: CacheGet) -> Message:
        key = msg.key
        if msg.part > 0:
            return await self._load(key, msg.part) or CacheMiss(key, lead=False)
        if msg.lead_wait <= 0:
            hit = await self._load(key)
            self._count(hit)
            return hit or CacheMiss(key, lead=False)
        deadline = time.monotonic() + msg.lead_wait
        waited = False
        while True:
            hit, lead = await self._load_or_lead(key)
            if hit is not None or lead:
                self._count(hit, waited)
                self.stats.leads += lead
                return hit or CacheMiss(key, lead=True)
            if not msg.wait:
                return CacheMiss(key, busy=True)  # counted when it asks again, waiting
            if time.monotonic() > deadline:
                self.stats.misses += 1
                return CacheMiss(key, lead=False)
            await self._wait_put(key)
            waited = True

    async def _wait_put(self, key: str) -> None:
        """Wait until a put of `key` through this replica, or `POLL_S` (a put through another
        replica is seen only by asking Redis again). The last waiter to leave drops the event,
        so a put that lands between a lookup's read and its wait leaves nothing behind."""
        event = self._ready.setdefault(key, asyncio.Event())
        self._waiting[key] = self._waiting.get(key, 0) + 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), POLL_S)
        finally:
            left = self._waiting.pop(key) - 1
            if left:
                self._waiting[key] = left
            elif self._ready.get(key) is event:
                del self._ready[key]

    async def _load_or_lead(self, key: str) -> tuple[CacheHit | None, bool]:
        """(the stored answer, or whether this lookup took the lead), in one Redis round trip
        (`_READ_OR_CLAIM`, atomic: no leader can put and let go between the read and the
        claim). A stored first part whose other parts are missing (one expired, or a leader
        is still putting them) is no answer: then the lease is tried on its own."""
        lease, px = "kvmesh:rc:lease:" + key, int(self.cfg.lease * 1000)
        found, value = await self._run(
            "get-or-claim", lambda: self._read_or_claim(keys=[_entry(key, 0), lease], args=[px]))
        if not found:
            return None, bool(value)
        hit = await self._complete(key, value)
        if hit is not None:
            return hit, False
        return None, bool(await self._call("set", lease, b"1", nx=True, px=px))

    def _count(self, hit: CacheHit | None, waited: bool = False) -> None:
        if hit is None:
            self.stats.misses += 1
            return
        self.stats.hits += 1
        self.stats.waited_hits += waited

    @traced("cache.store")
    async def _put(self, msg: Message, raw: Any) -> None:
        assert isinstance(msg, CachePut)
        key = msg.key
        if msg.renew:  # an expired lease stays expired: another caller may lead by now
            await self._renew(key)
            return
        done = not msg.chunks  # a release frees the lease at once
        try:
            if msg.chunks:
                done = await self._store_part(msg)
            if done:
                await self._call("delete", "kvmesh:rc:lease:" + key)
        except RedisDown as exc:
            log.warning("cache put of %s failed (%s); its lease expires in %gs",
                        key, exc, self.cfg.lease)
            done = True  # wake local waiters: they find no entry and compute
        finally:
            event = self._ready.pop(key, None) if done else None
            if event is not None:
                event.set()

    async def _renew(self, key: str) -> None:
        try:
            await self._call("pexpire", "kvmesh:rc:lease:" + key, int(self.cfg.lease * 1000))
        except RedisDown as exc:
            log.warning("renewing the lease of %s failed (%s)", key, exc)

    async def _store_part(self, msg: CachePut) -> bool:
        """Store one part of an answer; True when it was the last one missing."""
        ttl_ms = int(self.cfg.ttl * 1000)
        entry = wire.encode(CacheHit(msg.key, msg.chunks, msg.part, msg.parts))
        await self._call("set", _entry(msg.key, msg.part), entry, px=ttl_ms)
        if msg.parts > 1:
            counter = "kvmesh:rc:parts:" + msg.key
            if await self._call("incr", counter) < msg.parts:
                await self._call("pexpire", counter, int(self.cfg.lease * 1000))
                return False
            await self._call("delete", counter)
        self.stats.puts += 1
        return True

    async def _stats(self, msg: Message, raw: Any) -> Message:
        return self.stats


def _entry(key: str, part: int) -> str:
    return f"kvmesh:rc:{key}" if part == 0 else f"kvmesh:rc:{key}#{part}"


async def serve(cfg: CacheConfig) -> None:
    actor = ResultCache(cfg)
    await actor.start()
    await actor.run_until_stopped()


def main(argv: Sequence[str] | None = None) -> int:
    cfg = load(CacheConfig, sys.argv[1:] if argv is None else argv)
    return run_service("cache", f"cache-{os.getpid()}", serve(cfg), cfg.log_level,
                       cfg.metrics_port, cfg.metrics_host)


if __name__ == "__main__":
    sys.exit(main())
