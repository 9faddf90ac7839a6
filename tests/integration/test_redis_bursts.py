"""A burst of concurrent handlers, more than redis-py's default pool holds (100 connections),
against a real Redis: auth verifies every key and the result cache answers every lookup. With
the default pool the calls past its size failed at once with "Too many connections", which
auth answered as Redis down (503 `auth_unavailable`, seen at 256 streams on the H200) and the
cache as a miss for `REDIS_DOWN_S`. Their pools (kvmesh/redis_pool.py) now wait for a free
connection, bounded by `redis_timeout`."""

from __future__ import annotations

import asyncio
import uuid

from auth.service import AuthService
from auth.store import AuthStore
from auth.tenant import Tenant
from cache.service import ResultCache
from kvmesh.config import AuthConfig, CacheConfig
from kvmesh.wire import CacheGet, CacheMiss, Identity, VerifyKey

BURST = 300  # past redis-py's default pool of 100


async def test_a_burst_of_verifications_past_the_pool_size_all_verify(redis_url: str) -> None:
    cfg = AuthConfig(redis_url=redis_url, redis_timeout=5.0, max_concurrency=8)
    store = AuthStore.from_url(cfg.redis_url, cfg.redis_timeout, cfg.max_concurrency)
    try:
        name = "t-" + uuid.uuid4().hex[:8]
        await store.update_tenant(name, lambda _: Tenant(name, models=["m"]))
        plain, _ = await store.create_key(name)
        svc = AuthService(cfg, store)
        verify = svc._redis_down(svc._verify)
        answers = await asyncio.gather(*[verify(VerifyKey(plain), None) for _ in range(BURST)])
        assert all(isinstance(a, Identity) for a in answers), \
            {type(a).__name__ for a in answers if not isinstance(a, Identity)}
    finally:
        await store.close()


async def test_a_burst_of_cache_lookups_past_the_pool_size_all_answer(redis_url: str) -> None:
    cache = ResultCache(CacheConfig(redis_url=redis_url, redis_timeout=5.0, max_concurrency=8))
    try:
        keys = [uuid.uuid4().hex for _ in range(BURST)]
        answers = await asyncio.gather(*[cache._get(CacheGet(k), None) for k in keys])
        assert all(isinstance(a, CacheMiss) for a in answers)
        assert cache.stats.errors == 0  # no lookup failed (and Redis was never marked down)
    finally:
        await cache.redis.aclose()
