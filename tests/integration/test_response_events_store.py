"""The store's side of event logs (cache/response_events.py) on a real Redis, handler by
handler: appends that grow a tenant past its byte cap evict its oldest responses, an append
tried again stores no event twice, a gap is refused, and the bytes counter always equals the
sizes it sums."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import redis

from cache.response_events import ResponseEventLogs
from cache.responses_store import ResponseStore
from kvmesh.actor import Actor
from kvmesh.config import CacheConfig
from kvmesh.redis_pool import redis_client
from kvmesh.wire import (
    ErrorReply,
    ResponseAck,
    ResponseEventsPut,
    ResponsePut,
    StoredResponse,
)

CAP = 3000


def _record(rid: str, status: str = "in_progress") -> StoredResponse:
    return StoredResponse(rid, 0, status, "{}", "[]", [], logged=True)


def _rid() -> str:
    return "resp_" + uuid.uuid4().hex


async def _run(redis_url: str, work: Any) -> Any:
    cfg = CacheConfig(redis_url=redis_url, responses_tenant_bytes=CAP,
                      responses_max_bytes=4000)
    client = redis_client(redis_url, 2.0, 4)
    try:
        store = ResponseStore(Actor("cache-test", "nats://127.0.0.1:1"), cfg, client)
        return await work(store, ResponseEventLogs(store))
    finally:
        await client.aclose()


def test_appends_evict_the_oldest_past_the_tenant_cap(redis_url: str) -> None:
    tenant = "t" + uuid.uuid4().hex[:8]
    old, new = _rid(), _rid()

    async def work(store: ResponseStore, logs: ResponseEventLogs) -> None:
        for rid in (old, new):
            assert isinstance(await store._put(ResponsePut(tenant, _record(rid))), ResponseAck)
        for first in range(4):  # 4 appends of 1,000 bytes to the newer one's log
            done = await logs._put(ResponseEventsPut(tenant, new, first, [b"e" * 1000]))
            assert isinstance(done, ResponseAck), done
    asyncio.run(_run(redis_url, work))
    r = redis.Redis.from_url(redis_url)
    prefix = f"kvmesh:resp:{{t:{tenant}}}:"
    assert not r.exists(prefix + old)  # evicted by the appends, not by a later put
    assert r.llen(prefix + new + ":events") == 4
    sizes = {k.decode(): int(v) for k, v in r.hgetall(prefix + "sizes").items()}
    assert int(r.get(prefix + "bytes")) == sum(sizes.values())
    assert set(sizes) == {new, new + ":events"}


def test_an_append_tried_again_stores_no_event_twice_and_a_gap_is_refused(
        redis_url: str) -> None:
    tenant, rid = "t" + uuid.uuid4().hex[:8], _rid()

    async def work(store: ResponseStore, logs: ResponseEventLogs) -> list[Any]:
        await store._put(ResponsePut(tenant, _record(rid)))
        return [await logs._put(ResponseEventsPut(tenant, rid, first, events))
                for first, events in ((0, [b"a", b"b"]), (0, [b"a", b"b", b"c"]),
                                      (5, [b"x"]), (3, [b"d" * 4000]))]
    answers = asyncio.run(_run(redis_url, work))
    assert isinstance(answers[0], ResponseAck) and isinstance(answers[1], ResponseAck)
    assert isinstance(answers[2], ErrorReply) and answers[2].code == "event_gap"
    assert isinstance(answers[3], ErrorReply) and answers[3].status == 413  # the log's cap
    r = redis.Redis.from_url(redis_url)
    assert r.lrange(f"kvmesh:resp:{{t:{tenant}}}:{rid}:events", 0, -1) == [b"a", b"b", b"c"]


def test_a_put_that_keeps_the_ttl_keeps_what_the_record_has_left(redis_url: str) -> None:
    tenant, rid = "t" + uuid.uuid4().hex[:8], _rid()

    async def work(store: ResponseStore, logs: ResponseEventLogs) -> None:
        await store._put(ResponsePut(tenant, _record(rid), ttl=40))
        await store._put(ResponsePut(tenant, _record(rid, "failed"), ttl=-1))
    asyncio.run(_run(redis_url, work))
    assert 0 < redis.Redis.from_url(redis_url).pttl(f"kvmesh:resp:{{t:{tenant}}}:{rid}") <= 40_000
