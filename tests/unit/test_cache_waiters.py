"""The result cache's single-flight waiters leave no state behind (cache/service.py), on a
real redis-server: a lookup that waits on a leader's key holds an event only while it waits,
however the leader's put and the waiter's reads interleave."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from cache.service import ResultCache
from kvmesh.cli import procs
from kvmesh.config import CacheConfig
from kvmesh.wire import CacheGet, CacheHit, CacheMiss, CachePut, Chunk, UsageInfo


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = procs.free_port()
    child = procs.start_redis(port, str(tmp_path_factory.mktemp("redis")))
    procs.wait_port(port, 10, child.proc)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        child.stop()


def _answer(key: str) -> CachePut:
    return CachePut(key, [Chunk("r", 0, 0, "hi", [1], finish_reason="stop",
                                usage=UsageInfo(1, 1))])


async def _scenario(redis_url: str) -> None:
    cache = ResultCache(CacheConfig(redis_url=redis_url))
    try:
        lead = await cache._lookup(CacheGet("k1", lead_wait=5.0))
        assert isinstance(lead, CacheMiss) and lead.lead
        waiters = [asyncio.ensure_future(cache._lookup(CacheGet("k1", lead_wait=5.0)))
                   for _ in range(3)]
        await asyncio.sleep(0.02)  # they are waiting on the leader
        assert cache._waiting == {"k1": 3}
        await cache._put(_answer("k1"), None)
        assert all(isinstance(hit, CacheHit) for hit in await asyncio.gather(*waiters))
        assert cache._ready == {} and cache._waiting == {}

        lead = await cache._lookup(CacheGet("k2", lead_wait=5.0))
        waiter = asyncio.ensure_future(cache._lookup(CacheGet("k2", lead_wait=5.0)))
        await asyncio.sleep(0.02)
        other = ResultCache(CacheConfig(redis_url=redis_url))  # the put lands through another
        # replica: this one's event is never set
        await other._put(_answer("k2"), None)
        await other.redis.aclose()
        assert isinstance(await waiter, CacheHit)  # found by asking Redis again
        assert cache._ready == {} and cache._waiting == {}
    finally:
        await cache.redis.aclose()


def test_waiters_leave_no_event_behind(redis_url: str) -> None:
    asyncio.run(_scenario(redis_url))
