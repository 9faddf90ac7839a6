"""Per-tenant rate limits and the concurrency cap, atomic in Redis and shared by every replica.

Two token buckets per tenant, each refilling continuously at `limit / window` per second up to
`limit` (so a tenant may burst a full window's worth, then proceeds at the average rate):
- requests: `admit` takes one; a request needs a whole one.
- tokens: `admit` reserves the request's worst case (`tokens`: its prompt estimate plus
  `max_tokens`, at most a full bucket) and refuses while the bucket holds less, so parallel
  requests cannot overshoot `tpm`; `settle` gives back the reservation and charges the real
  usage (prompt + completion tokens). A reservation is held under the request id, so a settle
  refunds only what its admit took and charges once: a repeated or stray settle (a retry
  whose first try did land) charges nothing.
- concurrency: a sorted set of in-flight request ids scored by a lease deadline. `admit` adds
  the id, `renew` pushes its deadline while the request lives, `settle` removes it; a gateway
  that dies (or cannot reach Redis to settle) leaks a slot only until the lease runs out.
- A request is withdrawn by a `settle(..., withdraw=True)` when its client was refused or
  left before its admission answered: whichever of the two lands first, it takes nothing
  (the admission leaves its entry in the held-reservations hash until settled, a withdrawal
  that comes first a `void` mark).

Every script reads the clock with Redis `TIME`, so replicas with skewed clocks agree. Keys
share the hash tag `{tenant}`, so each script touches one Redis Cluster slot. A refused
admission says which limit and how long until it would pass (`retry_after`, seconds).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

# The held-reservations hash expires this long (+ the window) after the tenant's last
# admission; a reservation nobody settles (its gateway died) stays in it until then (an entry
# a crash leaves, never refunded: the reservation was the safe side).
HELD_S = 3600

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
  lvl = math.min(cap, lvl)
  redis.call('HSET', key, 'level', tostring(lvl), 'ts', tostring(now))
  redis.call('PEXPIRE', key, math.ceil((cap - lvl) * window / cap * 1000) + 1000)
end
"""

# KEYS: requests bucket, tokens bucket, in-flight set, held reservations.
# ARGV: window_s, rpm, tpm, max_concurrency, request_id, lease_s, tokens to reserve.
_ADMIT = (
    _PRELUDE
    + """
local rpm, tpm, conc = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local lease = tonumber(ARGV[6])
local need = math.min(tonumber(ARGV[7]), tpm)
if redis.call('HGET', KEYS[4], ARGV[5]) == 'void' then  -- withdrawn before it came: nothing
  redis.call('HDEL', KEYS[4], ARGV[5])
  return {'void', '0'}
end
local req, tok, inflight = 0, 0, 0
if rpm > 0 then
  req = level(KEYS[1], rpm)
  if req < 1 then return {'requests', tostring((1 - req) * window / rpm)} end
end
if tpm > 0 then
  tok = level(KEYS[2], tpm)
  if tok <= 0 or tok < need then
    return {'tokens', tostring((math.max(need, 0) - tok) * window / tpm)}
  end
end
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  inflight = redis.call('ZCARD', KEYS[3])
  if inflight >= conc then return {'concurrency', '1'} end
  redis.call('ZADD', KEYS[3], now + lease, ARGV[5])
  redis.call('PEXPIRE', KEYS[3], math.ceil(lease * 1000))
end
if rpm > 0 then store(KEYS[1], req - 1, rpm) end
if tpm > 0 and need > 0 then store(KEYS[2], tok - need, tpm) end
redis.call('HSET', KEYS[4], ARGV[5], tostring(math.max(need, 0)))  -- admitted, until settled
redis.call('PEXPIRE', KEYS[4], math.ceil((window + HELD_S) * 1000))
local function left(v, cap)
  if cap > 0 then return tostring(v / cap) end
  return '-1'
end
return {'ok', '0', left(req - 1, rpm), left(tok - math.max(need, 0), tpm),
        left(conc - inflight - 1, conc)}
"""
).replace("HELD_S", str(HELD_S))

# KEYS: in-flight set. ARGV: request_id, lease_s. Only a slot still held is renewed, so a
# renew that races its request's settle cannot bring the slot back.
_RENEW = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local lease = tonumber(ARGV[2])
local n = redis.call('ZADD', KEYS[1], 'XX', 'CH', now + lease, ARGV[1])
if n > 0 then redis.call('PEXPIRE', KEYS[1], math.ceil(lease * 1000)) end
return n
"""

# KEYS: tokens bucket, in-flight set, held reservations, requests bucket. ARGV: window_s, tpm,
# tokens used, request_id, "1" to withdraw (refund everything), rpm. A withdrawal that comes
# before its admission leaves a `void` mark the admission then takes nothing for.
_SETTLE = (
    _PRELUDE
    + """
local tpm, used = tonumber(ARGV[2]), tonumber(ARGV[3])
local withdraw, rpm = ARGV[5] == '1', tonumber(ARGV[6])
local held = redis.call('HGET', KEYS[3], ARGV[4])
if held == 'void' then return 'ok' end
if held then
  redis.call('HDEL', KEYS[3], ARGV[4])
  held = tonumber(held)
  if withdraw then used = 0 end
  if tpm > 0 and used ~= held then store(KEYS[1], level(KEYS[1], tpm) + held - used, tpm) end
  if withdraw and rpm > 0 then store(KEYS[4], level(KEYS[4], rpm) + 1, rpm) end
elseif withdraw then
  redis.call('HSET', KEYS[3], ARGV[4], 'void')
  redis.call('PEXPIRE', KEYS[3], math.ceil((window + HELD_S) * 1000))
end
redis.call('ZREM', KEYS[2], ARGV[4])
return 'ok'
"""
).replace("HELD_S", str(HELD_S))


@dataclass
class Limits:
    rpm: int = 0
    tpm: int = 0
    max_concurrency: int = 0


@dataclass
class Headroom:
    """Share of each of a tenant's limits left right after an admission, in [0, 1] (None: the
    tenant has no such limit). Tokens count what is left after this request's reservation."""

    requests: float | None = None
    tokens: float | None = None
    concurrency: float | None = None


@dataclass
class Refusal:
    """Which limit refused (`requests`, `tokens` or `concurrency`) and for how long."""

    limit: str
    retry_after: float


def _keys(tenant: str) -> tuple[str, str, str, str]:
    base = f"kvmesh:rl:{{{tenant}}}:"
    return base + "req", base + "tok", base + "inflight", base + "held"


class RateLimiter:
    def __init__(
        self, redis: aioredis.Redis, window_s: float = 60.0, lease_s: float = 30.0
    ) -> None:
        self.window_s = window_s
        self.lease_s = lease_s
        self._admit = redis.register_script(_ADMIT)
        self._renew = redis.register_script(_RENEW)
        self._settle = redis.register_script(_SETTLE)

    async def admit(
        self, tenant: str, request_id: str, limits: Limits, tokens: int = 0
    ) -> Refusal | None:
        """Take one request and reserve `tokens` (at most a full bucket) from the tenant's
        budget, and a concurrency slot; or say which limit refuses it (nothing is taken)."""
        return (await self.admit_with_headroom(tenant, request_id, limits, tokens))[0]

    async def admit_with_headroom(self, tenant: str, request_id: str, limits: Limits,
                                  tokens: int = 0) -> tuple[Refusal | None, Headroom]:
        """`admit`, and what is left of each limit afterwards (for metrics: tenants near
        their limits)."""
        if not (limits.rpm or limits.tpm or limits.max_concurrency):
            return None, Headroom()
        which, wait, *left = await self._admit(
            keys=list(_keys(tenant)),
            args=[self.window_s, limits.rpm, limits.tpm, limits.max_concurrency, request_id,
                  self.lease_s, max(0, tokens)],
        )
        if which == "ok":
            req, tok, conc = (None if float(v) < 0 else max(0.0, float(v)) for v in left)
            return None, Headroom(req, tok, conc)
        return Refusal(which, float(wait)), Headroom()

    async def renew(self, tenant: str, request_id: str) -> bool:
        """Push the request's concurrency lease `lease_s` ahead; False when it holds no slot
        (settled already, or expired)."""
        return bool(await self._renew(keys=[_keys(tenant)[2]],
                                      args=[request_id, self.lease_s]))

    async def settle(self, tenant: str, request_id: str, limits: Limits, tokens: int,
                     withdraw: bool = False) -> None:
        """Give back the request's reservation, charge its real usage `tokens`, and free its
        concurrency slot. Idempotent: a retry of a settle that landed changes nothing. With
        `withdraw` (its client was refused, or left, before it was admitted) the request
        takes nothing: its request and reservation are given back, and an admission that
        comes later (it was still on its way) takes nothing either."""
        if not (limits.rpm or limits.tpm or limits.max_concurrency):
            return
        req, tok, inflight, held = _keys(tenant)
        await self._settle(
            keys=[tok, inflight, held, req],
            args=[self.window_s, limits.tpm, max(0, tokens), request_id, int(withdraw),
                  limits.rpm],
        )
