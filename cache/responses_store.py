"""The `/v1/responses` store: stored responses in Redis, per tenant, served by the cache actor.

Contract (subjects in `kvmesh.wire`, queue group "cache"):
- `ResponsePut(tenant, record, ttl)` on `RESPONSES_PUT` stores (or replaces) the record for
  `ttl` seconds (0: `responses_ttl`; below 0: what the stored record has left) and answers
  `ResponseAck`. A record whose frame is over
  `responses_max_bytes` is 413 `response_too_large`. After the put, the tenant's responses
  that expired are dropped from its index and, while the tenant holds more than
  `responses_tenant_bytes`, its oldest responses are evicted (never the one just put).
- Only an `in_progress` record creates a response (the gateway stores one first, before any
  of the answer is sent); a finished one (`completed`, `incomplete`, `failed`) only replaces a
  record still stored, else the put does nothing and still answers `ResponseAck`. So a
  response deleted while it was generated stays deleted when it finishes (as one expired or
  evicted then does), and its client still gets its answer. The check and the write are one
  Lua script: no delete can fall between them.
- `ResponseGet(tenant, id, chain)` on `RESPONSES_GET` answers `ResponseFound`: the record, or
  with `chain` the record and every one it continues, oldest first, each without its `body`
  and `input_items` (empty: a continuation reads only ids, statuses and messages, and a long
  chain of whole records would pass NATS' max payload). An id the tenant does not
  hold (another tenant's, expired, evicted, deleted, or not a response id) is 404
  `response_not_found`, as is a chain with a link missing (the message names the link).
- `ResponseDelete(tenant, id)` on `RESPONSES_DELETE` answers `ResponseAck`, or 404.
- `ResponsesPurge(tenant)` on `RESPONSES_PURGE` deletes every response of the tenant (its
  tenant is being deleted) and answers `ResponsesPurged` with how many were stored. A record
  in progress then never comes back: its finished put only replaces.
- Redis down or slower than `redis_timeout` is 503 `store_unavailable` at once: a caller that
  asked to store must learn that it was not stored.
- Redis layout, every key of a tenant in one hash slot (`{t:<tenant>}`, so it runs on Redis
  Cluster): `kvmesh:resp:{t:<tenant>}:<id>` = the record's frame (with its TTL);
  `...:index` = sorted set of ids by first put (ms); `...:sizes` = hash id -> frame bytes;
  `...:bytes` = their sum. Puts and deletes keep the four together in one Lua script.
  A resumable stream's event log, `...:<id>:events` (cache/response_events.py), is counted in
  `sizes` (as `<id>:events`) and `bytes` too, and goes with its record when that is
  deleted, evicted or purged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from kvmesh import wire
from kvmesh.actor import Actor
from kvmesh.config import CacheConfig
from kvmesh.wire import (
    ErrorReply,
    Message,
    ResponseAck,
    ResponseDelete,
    ResponseFound,
    ResponseGet,
    ResponsePut,
    ResponsesPurge,
    ResponsesPurged,
    StoredResponse,
)

log = logging.getLogger("kvmesh.cache.responses")
RESPONSE_ID = re.compile(r"resp_[0-9a-f]{32}")  # what the gateway makes; anything else is 404
MAX_CHAIN = 10_000  # links followed for one conversation (a guard, not a product limit)
_Failure = (redis.exceptions.RedisError, OSError, asyncio.TimeoutError)

# Lua shared by the scripts that grow a tenant's bytes: drop the tenant's responses oldest
# first (each with its event log), never `keep` nor any newer than it, while `total` is over
# `cap`, and drop the expired ones met on the way. Returns the count evicted (expired ones
# not counted).
EVICT = """
local function evict(index, sizes, bytes, prefix, keep, total, cap)
  local evicted = 0
  while true do
    local oldest = redis.call('ZRANGE', index, 0, 0)[1]
    if not oldest or oldest == keep then break end
    local expired = redis.call('EXISTS', prefix .. oldest) == 0
    if not expired and total <= cap then break end
    if not expired then evicted = evicted + 1 end
    local log = oldest .. ':events'
    redis.call('DEL', prefix .. oldest, prefix .. log)
    total = redis.call('DECRBY', bytes, tonumber(redis.call('HGET', sizes, oldest) or '0')
                       + tonumber(redis.call('HGET', sizes, log) or '0'))
    redis.call('HDEL', sizes, oldest, log)
    redis.call('ZREM', index, oldest)
  end
  return evicted
end
"""
# KEYS: entry, index, sizes, bytes. ARGV: id, frame, ttl ms (-1: keep the record's), now ms,
# tenant cap, entry prefix, "1" when the record only replaces (a finished one). Returns the
# evicted count, -1 for none put.
_PUT = EVICT + """
if ARGV[7] == '1' and redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local ttl = tonumber(ARGV[3])
if ttl < 0 then ttl = redis.call('PTTL', KEYS[1]) end
local old = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[2])
end
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
end
redis.call('HSET', KEYS[3], ARGV[1], string.len(ARGV[2]))
local total = redis.call('INCRBY', KEYS[4], string.len(ARGV[2]) - old)
local evicted = evict(KEYS[2], KEYS[3], KEYS[4], ARGV[6], ARGV[1], total, tonumber(ARGV[5]))
for i = 2, 4 do
  if ttl > 0 and redis.call('PTTL', KEYS[i]) < ttl then
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
end
return evicted
"""
# KEYS: entry, index, sizes, bytes, event log. ARGV: id.
_DELETE = """
redis.call('DEL', KEYS[5])
local log = ARGV[1] .. ':events'
redis.call('DECRBY', KEYS[4], tonumber(redis.call('HGET', KEYS[3], log) or '0'))
redis.call('HDEL', KEYS[3], log)
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
redis.call('DECRBY', KEYS[4], tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0'))
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

# KEYS: index, sizes, bytes. ARGV: entry prefix. Returns the number of records deleted.
_PURGE = """
local n = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  n = n + redis.call('DEL', ARGV[1] .. id)
  redis.call('DEL', ARGV[1] .. id .. ':events')
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return n
"""


class StoreDown(Exception):
    pass


def prefix(tenant: str) -> str:
    return f"kvmesh:resp:{{t:{tenant}}}:"


def record_keys(tenant: str, response_id: str) -> list[str]:
    p = prefix(tenant)
    return [p + response_id, p + "index", p + "sizes", p + "bytes"]


def events_key(tenant: str, response_id: str) -> str:
    """The Redis list that logs a response's stream events (cache/response_events.py)."""
    return prefix(tenant) + response_id + ":events"


def not_found(response_id: str) -> ErrorReply:
    return ErrorReply(404, "invalid_request_error", f"Response with id {response_id!r} not found.",
                      code="response_not_found")


class ResponseStore:
    """The store's handlers on an actor's NATS connection, over that actor's Redis client."""

    def __init__(self, actor: Actor, cfg: CacheConfig, client: aioredis.Redis) -> None:
        self.actor = actor
        self.cfg = cfg
        self.redis = client
        self._put_script = client.register_script(_PUT)
        self._delete_script = client.register_script(_DELETE)
        self._purge_script = client.register_script(_PURGE)

    async def start(self) -> None:
        n = self.cfg.max_concurrency
        await self.actor.serve(wire.RESPONSES_PUT, (ResponsePut,), self.guard(self._put),
                               queue="cache", max_concurrency=n)
        await self.actor.serve(wire.RESPONSES_GET, (ResponseGet,), self.guard(self._get),
                               queue="cache", max_concurrency=n)
        await self.actor.serve(wire.RESPONSES_DELETE, (ResponseDelete,),
                               self.guard(self._delete), queue="cache", max_concurrency=n)
        await self.actor.serve(wire.RESPONSES_PURGE, (ResponsesPurge,),
                               self.guard(self._purge), queue="cache", max_concurrency=n)
        log.info("responses store: ttl %gs, %d bytes per response, %d per tenant",
                 self.cfg.responses_ttl, self.cfg.responses_max_bytes,
                 self.cfg.responses_tenant_bytes)

    def guard(self, handler: Any) -> Any:
        """`handler` with Redis failures answered as 503 `store_unavailable`."""
        async def guarded(msg: Message, raw: Any) -> Message:
            try:
                return await handler(msg)  # type: ignore[no-any-return]
            except StoreDown as exc:  # Redis's words (its address) go to the log only
                log.warning("responses store: %s", exc)
                return ErrorReply(503, "service_unavailable",
                                  "the responses store is unavailable (its database is "
                                  "unreachable); retry, or send store: false", param="store",
                                  code="store_unavailable", retry_after=1.0)
        return guarded

    async def redis_call(self, work: Any) -> Any:
        try:
            return await asyncio.wait_for(work, self.cfg.redis_timeout * 2)
        except _Failure as exc:
            log.warning("responses store: redis failed: %s", exc)
            raise StoreDown(f"redis: {exc or type(exc).__name__}") from None

    async def _put(self, msg: Message) -> Message:
        assert isinstance(msg, ResponsePut)
        rec = msg.record
        if not RESPONSE_ID.fullmatch(rec.id):
            return ErrorReply(400, "invalid_request_error", f"not a response id: {rec.id!r}")
        frame = wire.encode(rec)
        if len(frame) > self.cfg.responses_max_bytes:
            return ErrorReply(413, "invalid_request_error",
                              f"the response is {len(frame)} bytes stored; the store's limit is "
                              f"{self.cfg.responses_max_bytes}", code="response_too_large")
        ttl_ms = -1 if msg.ttl < 0 else min(int((msg.ttl or self.cfg.responses_ttl) * 1000),
                                            1 << 53)
        replace_only = rec.status != "in_progress"  # see the module doc: deletes stick
        evicted = await self.redis_call(self._put_script(
            keys=record_keys(msg.tenant, rec.id),
            args=[rec.id, frame, ttl_ms, int(time.time() * 1000),
                  self.cfg.responses_tenant_bytes, prefix(msg.tenant), int(replace_only)]))
        if evicted < 0:
            log.info("responses store: %s finished after it was deleted (or expired, or "
                     "evicted); not stored again", rec.id)
        elif evicted:
            log.info("responses store: tenant %r over %d bytes; evicted its %d oldest",
                     msg.tenant, self.cfg.responses_tenant_bytes, evicted)
        return ResponseAck(rec.id)

    async def _get(self, msg: Message) -> Message:
        assert isinstance(msg, ResponseGet)
        records: list[StoredResponse] = []
        want: str | None = msg.id
        while want is not None and len(records) < MAX_CHAIN:
            rec = await self.load(msg.tenant, want)
            if rec is None:
                if not records:
                    return not_found(msg.id)
                return ErrorReply(404, "invalid_request_error",
                                  f"Response {msg.id!r} continues {want!r}, which is no longer "
                                  "stored (expired, evicted or deleted).",
                                  code="response_not_found")
            records.append(dataclasses.replace(rec, body="", input_items="")
                           if msg.chain else rec)
            want = rec.previous_response_id if msg.chain else None
        records.reverse()
        return ResponseFound(records)

    async def load(self, tenant: str, response_id: str) -> StoredResponse | None:
        if not RESPONSE_ID.fullmatch(response_id):
            return None
        data = await self.redis_call(self.redis.get(prefix(tenant) + response_id))
        if data is None:
            return None
        try:
            return wire.decode(data, StoredResponse)
        except wire.WireError as exc:
            log.warning("responses store: dropping undecodable %s: %s", response_id, exc)
            return None

    async def _delete(self, msg: Message) -> Message:
        assert isinstance(msg, ResponseDelete)
        if not RESPONSE_ID.fullmatch(msg.id):
            return not_found(msg.id)
        keys = [*record_keys(msg.tenant, msg.id), events_key(msg.tenant, msg.id)]
        removed = await self.redis_call(self._delete_script(keys=keys, args=[msg.id]))
        return ResponseAck(msg.id) if removed else not_found(msg.id)

    async def _purge(self, msg: Message) -> Message:
        assert isinstance(msg, ResponsesPurge)
        keys = record_keys(msg.tenant, "")[1:]  # the tenant's index, sizes and bytes
        deleted = await self.redis_call(self._purge_script(keys=keys, args=[prefix(msg.tenant)]))
        log.info("responses store: tenant %r purged (%d responses)", msg.tenant, deleted)
        return ResponsesPurged(int(deleted))
