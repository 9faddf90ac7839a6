"""The auth store and rate limiter against a real Redis: hashing at rest, token buckets, the
concurrency cap, all atomic and shared by every client of the same Redis."""

from __future__ import annotations

import asyncio
import uuid

import redis.asyncio as aioredis

from auth.ratelimit import Limits, RateLimiter
from auth.store import AuthStore, VerifyError
from auth.tenant import Tenant


def _tenant() -> str:
    return "t-" + uuid.uuid4().hex[:8]


async def test_key_verifies_until_revoked_and_is_stored_only_hashed(redis_url: str) -> None:
    store = AuthStore.from_url(redis_url)
    name = _tenant()
    await store.update_tenant(name, lambda _: Tenant(name, models=["m"], priority="high"))
    plain, rec = await store.create_key(name)
    got, tenant = await store.verify(plain)
    assert got.key_id == rec.key_id and tenant.priority == "high"
    raw = await store.redis.hgetall(f"kvmesh:auth:key:{rec.key_id}")
    assert plain.split("_", 2)[2] not in str(raw) and rec.hash == raw["hash"]
    for bad, reason in [
        ("nope", "malformed"),
        (plain[:-1] + ("x" if plain[-1] != "x" else "y"), "unknown"),
    ]:
        try:
            await store.verify(bad)
            raise AssertionError("verified a bad key")
        except VerifyError as exc:
            assert exc.reason == reason
    await store.revoke_key(rec.key_id)
    try:
        await store.verify(plain)
        raise AssertionError("verified a revoked key")
    except VerifyError as exc:
        assert exc.reason == "revoked"
    await store.close()


async def test_request_bucket_is_shared_and_atomic_across_clients(redis_url: str) -> None:
    clients = [aioredis.Redis.from_url(redis_url, decode_responses=True) for _ in range(3)]
    limiters = [RateLimiter(c, window_s=60) for c in clients]
    tenant, limits = _tenant(), Limits(rpm=10)
    results = await asyncio.gather(
        *(limiters[i % 3].admit(tenant, uuid.uuid4().hex, limits) for i in range(30))
    )
    assert sum(r is None for r in results) == 10
    refused = [r for r in results if r is not None]
    assert all(r.limit == "requests" and 0 < r.retry_after <= 6.1 for r in refused)
    for c in clients:
        await c.aclose()


async def test_tokens_are_charged_after_the_request_and_refill(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    limiter = RateLimiter(r, window_s=2)
    tenant, limits = _tenant(), Limits(tpm=100)
    assert await limiter.admit(tenant, "a", limits) is None
    await limiter.settle(tenant, "a", limits, 150)  # real usage overdraws the bucket
    refusal = await limiter.admit(tenant, "b", limits)
    assert refusal is not None and refusal.limit == "tokens"
    assert 0.5 < refusal.retry_after <= 1.0  # 50 tokens short at 50 tokens/s
    await asyncio.sleep(refusal.retry_after + 0.1)
    assert await limiter.admit(tenant, "b", limits) is None
    await r.aclose()


async def test_concurrency_cap_frees_on_settle(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    limiter = RateLimiter(r)
    tenant, limits = _tenant(), Limits(max_concurrency=2)
    assert await limiter.admit(tenant, "a", limits) is None
    assert await limiter.admit(tenant, "b", limits) is None
    refusal = await limiter.admit(tenant, "c", limits)
    assert refusal is not None and refusal.limit == "concurrency"
    await limiter.settle(tenant, "a", limits, 0)
    assert await limiter.admit(tenant, "c", limits) is None
    await r.aclose()


async def test_an_admission_reports_the_headroom_left_of_each_limit(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    limiter = RateLimiter(r, window_s=600)  # slow refill: the levels barely move while we look
    tenant, limits = _tenant(), Limits(rpm=10, tpm=1000, max_concurrency=4)
    refusal, room = await limiter.admit_with_headroom(tenant, "a", limits)
    assert refusal is None
    assert abs(room.requests - 0.9) < 0.01 and abs(room.tokens - 1.0) < 0.01
    assert room.concurrency == 0.75  # 3 of 4 slots free
    await limiter.settle(tenant, "a", limits, 800)
    _, room = await limiter.admit_with_headroom(tenant, "b", limits)
    assert abs(room.requests - 0.8) < 0.01 and abs(room.tokens - 0.2) < 0.01
    _, room = await limiter.admit_with_headroom(_tenant(), "c", Limits(rpm=5))
    assert room.tokens is None and room.concurrency is None  # limits the tenant does not have


async def test_token_reservations_hold_parallel_admissions_within_tpm(redis_url: str) -> None:
    """10 parallel admissions reserving 30 tokens each against tpm=100: only 3 fit."""
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    limiter = RateLimiter(r, window_s=60)
    tenant, limits = _tenant(), Limits(tpm=100)
    results = await asyncio.gather(
        *(limiter.admit(tenant, f"r{i}", limits, tokens=30) for i in range(10)))
    admitted = [f"r{i}" for i, res in enumerate(results) if res is None]
    assert len(admitted) == 3
    assert all(res.limit == "tokens" for res in results if res is not None)
    await r.aclose()


async def test_settle_refunds_the_reservation_and_charges_real_usage_once(
        redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    limiter = RateLimiter(r, window_s=3600)  # no refill to speak of during the test
    tenant, limits = _tenant(), Limits(tpm=100)
    assert await limiter.admit(tenant, "a", limits, tokens=90) is None
    assert await limiter.admit(tenant, "b", limits, tokens=20) is not None  # 10 left
    for _ in range(2):  # a retried settle must not charge twice
        await limiter.settle(tenant, "a", limits, 30)
    assert await limiter.admit(tenant, "b", limits, tokens=70) is None  # 70 left
    assert await limiter.admit(tenant, "c", limits, tokens=1) is not None
    await r.aclose()


async def test_a_renewed_slot_outlives_its_lease_and_an_abandoned_one_expires(
        redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    limiter = RateLimiter(r, lease_s=1.0)
    tenant, limits = _tenant(), Limits(max_concurrency=1)
    assert await limiter.admit(tenant, "a", limits) is None
    for _ in range(4):  # 2 s: twice the lease, renewed every half lease
        await asyncio.sleep(0.5)
        assert await limiter.renew(tenant, "a")
        assert await limiter.admit(tenant, "b", limits) is not None
    await asyncio.sleep(1.2)  # "a" stops renewing (its gateway died): the slot frees
    assert await limiter.admit(tenant, "b", limits) is None
    assert not await limiter.renew(tenant, "a")  # gone, and a late renewal does not revive it
    await r.aclose()


async def test_a_withdrawn_request_takes_nothing_whichever_lands_first(redis_url: str) -> None:
    """A request its gateway gave up on before its admission answered (auth or Redis slow, or
    the client left) is withdrawn: its request, reservation and slot come back if the
    admission landed first, and a later admission takes nothing (audit i)."""
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    limiter = RateLimiter(r, window_s=3600)  # no refill to speak of during the test
    tenant, limits = _tenant(), Limits(rpm=2, tpm=100, max_concurrency=1)
    assert await limiter.admit(tenant, "a", limits, tokens=90) is None  # landed, then withdrawn
    await limiter.settle(tenant, "a", limits, 0, withdraw=True)
    await limiter.settle(tenant, "b", limits, 0, withdraw=True)  # withdrawn, then it lands
    refusal = await limiter.admit(tenant, "b", limits, tokens=90)
    assert refusal is not None and refusal.limit == "void"
    # the whole budget is there: two requests, 100 tokens, the slot
    assert await limiter.admit(tenant, "c", limits, tokens=100) is None
    await limiter.settle(tenant, "c", limits, 0)
    assert await limiter.admit(tenant, "d", limits, tokens=100) is None
    assert (await limiter.admit(tenant, "e", limits, tokens=1)).limit == "requests"  # type: ignore[union-attr]
    await limiter.settle(tenant, "d", limits, 0)
    assert await r.hgetall(f"kvmesh:rl:{{{tenant}}}:held") == {}  # every entry settled
    await r.aclose()


async def test_a_request_only_limited_tenants_settles_leave_no_entry(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    limiter = RateLimiter(r, window_s=60)
    tenant, limits = _tenant(), Limits(rpm=5)
    assert await limiter.admit(tenant, "a", limits) is None
    await limiter.settle(tenant, "a", limits, 7)
    assert await r.hgetall(f"kvmesh:rl:{{{tenant}}}:held") == {}
    await r.aclose()
