"""A gateway that shuts down gives up the result-cache leases it still holds (cache/client.py
`close`, run by the gateway app's cleanup): a request waiting on one of its keys computes at
once instead of waiting out the lease. Real nats-server, Redis and cache actor."""

from __future__ import annotations

import time
import uuid

from cache.client import ResultCacheClient
from cache.service import ResultCache
from kvmesh.actor import Actor
from kvmesh.config import CacheConfig
from kvmesh.wire import CacheMiss


async def test_close_releases_held_leases_and_stops_renewing(nats_url: str,
                                                              redis_url: str) -> None:
    cache = ResultCache(CacheConfig(nats_url=nats_url, redis_url=redis_url, lease=15.0,
                                    metrics_port=0))
    await cache.start()
    leader, follower = Actor("gateway-a", nats_url), Actor("gateway-b", nats_url)
    await leader.connect()
    await follower.connect()
    try:
        ours = ResultCacheClient(leader, lookup_timeout=2.0, lead_wait=30.0, renew_s=0.1)
        theirs = ResultCacheClient(follower, lookup_timeout=2.0, lead_wait=30.0)
        key = uuid.uuid4().hex
        first = await ours.lookup(key)
        assert isinstance(first, CacheMiss) and first.lead and key in ours.leading
        await ours.close()
        assert ours._renewer is not None and ours._renewer.done() and not ours.leading
        started = time.monotonic()
        second = await theirs.lookup(key)  # waits for a leader, who is gone
        assert isinstance(second, CacheMiss) and second.lead
        assert time.monotonic() - started < 5.0  # not the 15 s lease
    finally:
        await leader.drain()
        await follower.drain()
        await cache.drain()
