"""Per-tenant rate limits and the concurrency cap, atomic in Redis and shared by every replica.

Two token buckets per tenant, each refilling continuously at `limit / window` per second up to
`limit` (so a tenant may burst a full window's worth, then proceeds at the average rate):
- requests: `admit` takes one; a request needs a whole one.
- tokens: `admit` only checks the level is above zero; `settle` subtracts the request's real
  usage (prompt + completion tokens) once it is known, so the level may go negative and the
  tenant waits until it refills above zero.
- concurrency: a sorted set of in-flight request ids scored by a lease deadline; `settle`
  removes the id, and a gateway that dies leaks a slot only until the lease runs out.

Both scripts read the clock with Redis `TIME`, so replicas with skewed clocks agree. Bucket keys
share the hash tag `{tenant}`, so each script touches one Redis Cluster slot. A refused
admission says which limit and how long until it would pass (`retry_after`, seconds).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

_PRELUDE = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window = tonumber(ARGV[1])
local function level(key, cap)
  local v = redis.call('HMGET', key, 'level', 'ts')
  local lvl, ts = tonumber(v[1]), tonumber(v[2])
  if not lvl then return cap end
  return math.min(cap, lvl + math.max(0, now - ts) * cap / window)
end
local function store(key, lvl, cap)
  redis.call('HSET', key, 'level', tostring(lvl), 'ts', tostring(now))
  redis.call('PEXPIRE', key, math.ceil((cap - lvl) * window / cap * 1000) + 1000)
end
"""

# KEYS: requests bucket, tokens bucket, in-flight set.
# ARGV: window_s, rpm, tpm, max_concurrency, request_id, lease_s.
_ADMIT = (
    _PRELUDE
    + """
local rpm, tpm, conc = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local req, tok, inflight = 0, 0, 0
if rpm > 0 then
  req = level(KEYS[1], rpm)
  if req < 1 then return {'requests', tostring((1 - req) * window / rpm)} end
end
if tpm > 0 then
  tok = level(KEYS[2], tpm)
  if tok <= 0 then return {'tokens', tostring(-tok * window / tpm)} end
end
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  inflight = redis.call('ZCARD', KEYS[3])
  if inflight >= conc then return {'concurrency', '1'} end
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[6]), ARGV[5])
  redis.call('PEXPIRE', KEYS[3], math.ceil(tonumber(ARGV[6]) * 1000))
end
if rpm > 0 then store(KEYS[1], req - 1, rpm) end
local function left(v, cap)
  if cap > 0 then return tostring(v / cap) end
  return '-1'
end
return {'ok', '0', left(req - 1, rpm), left(tok, tpm), left(conc - inflight - 1, conc)}
"""
)

# KEYS: tokens bucket, in-flight set. ARGV: window_s, tpm, tokens, request_id.
_SETTLE = (
    _PRELUDE
    + """
local tpm, used = tonumber(ARGV[2]), tonumber(ARGV[3])
if tpm > 0 and used > 0 then store(KEYS[1], level(KEYS[1], tpm) - used, tpm) end
redis.call('ZREM', KEYS[2], ARGV[4])
return 'ok'
"""
)


@dataclass
class Limits:
    rpm: int = 0
    tpm: int = 0
    max_concurrency: int = 0


@dataclass
class Headroom:
    """Share of each of a tenant's limits left right after an admission, in [0, 1] (None: the
    tenant has no such limit). Tokens count what was left before this request's usage, which
    `settle` charges later."""

    requests: float | None = None
    tokens: float | None = None
    concurrency: float | None = None


@dataclass
class Refusal:
    """Which limit refused (`requests`, `tokens` or `concurrency`) and for how long."""

    limit: str
    retry_after: float


def _keys(tenant: str) -> tuple[str, str, str]:
    base = f"kvmesh:rl:{{{tenant}}}:"
    return base + "req", base + "tok", base + "inflight"


class RateLimiter:
    def __init__(
        self, redis: aioredis.Redis, window_s: float = 60.0, lease_s: float = 600.0
    ) -> None:
        self.window_s = window_s
        self.lease_s = lease_s
        self._admit = redis.register_script(_ADMIT)
        self._settle = redis.register_script(_SETTLE)

    async def admit(self, tenant: str, request_id: str, limits: Limits) -> Refusal | None:
        """Take one request from the tenant's budget, or say which limit refuses it."""
        return (await self.admit_with_headroom(tenant, request_id, limits))[0]

    async def admit_with_headroom(self, tenant: str, request_id: str,
                                  limits: Limits) -> tuple[Refusal | None, Headroom]:
        """`admit`, and what is left of each limit afterwards (for metrics: tenants near
        their limits)."""
        if not (limits.rpm or limits.tpm or limits.max_concurrency):
            return None, Headroom()
        which, wait, *left = await self._admit(
            keys=list(_keys(tenant)),
            args=[
                self.window_s,
                limits.rpm,
                limits.tpm,
                limits.max_concurrency,
                request_id,
                self.lease_s,
            ],
        )
        if which == "ok":
            req, tok, conc = (None if float(v) < 0 else max(0.0, float(v)) for v in left)
            return None, Headroom(req, tok, conc)
        return Refusal(which, float(wait)), Headroom()

    async def settle(self, tenant: str, request_id: str, limits: Limits, tokens: int) -> None:
        """Charge the request's real token usage and free its concurrency slot."""
        if not (limits.tpm or limits.max_concurrency):
            return
        _, tok, inflight = _keys(tenant)
        await self._settle(
            keys=[tok, inflight], args=[self.window_s, limits.tpm, max(0, tokens), request_id]
        )
