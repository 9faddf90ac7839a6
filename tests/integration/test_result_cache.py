"""The Redis result cache on a mesh of its own (one worker): a hit returns exactly the fresh
answer, streamed or not; identical concurrent requests run once; sampled requests are never
cached; with Redis stopped, requests still succeed."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nats
import pytest
from openai import OpenAI

from cache.key import cache_key
from gateway.openai_request import parse_completion
from kvmesh import wire
from kvmesh.cli import procs
from kvmesh.wire import CacheStats, Ping
from tests.integration.conftest import MODEL, Mesh, start_gateway
from tests.integration.helpers import call, wait_until
from tests.integration.routing_mesh import own_mesh

LEASE_S = 2.0


@pytest.fixture(scope="module")
def cmesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mesh, procs.Child]]:
    logs: Path = tmp_path_factory.mktemp("cache-mesh")
    # short single-flight leases, renewed often: a leader that died frees its key in 2 s
    with own_mesh(logs, workers=("c1",), cache_env={"KVMESH_CACHE_LEASE": str(LEASE_S)},
                  gateway_env={"cache_lease_renew": str(LEASE_S / 4)}) as pair:
        yield pair


@pytest.fixture(scope="module")
def cclient(cmesh):
    from openai import OpenAI

    return OpenAI(base_url=cmesh[0].base_url + "/v1", api_key="unused", max_retries=0, timeout=60)


def cache_stats(mesh: Mesh) -> CacheStats:
    async def ask() -> CacheStats:
        nc = await nats.connect(mesh.nats_url)
        try:
            msg = await nc.request(wire.CACHE_STATS, wire.encode(Ping()), timeout=2)
            return wire.decode(msg.data, CacheStats)
        finally:
            await nc.close()

    return asyncio.run(ask())


def chat(client, content: str, stream: bool = False, **extra):
    """(x-kvmesh-cache header, answer text, usage dict) of one chat request."""
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL,
        max_tokens=12,
        messages=[{"role": "user", "content": content}],
        stream=stream,
        **({"temperature": 0} | extra),
        **({"stream_options": {"include_usage": True}} if stream else {}),
    )
    header = raw.headers.get("x-kvmesh-cache")
    parsed = raw.parse()
    if not stream:
        return header, parsed.choices[0].message.content, parsed.usage.model_dump()
    text, usage = [], None
    for ev in parsed:
        if ev.choices:
            text.append(ev.choices[0].delta.content or "")
        if ev.usage is not None:
            usage = ev.usage.model_dump()
    return header, "".join(text), usage


def test_hit_returns_the_fresh_answer(cmesh, cclient) -> None:
    fresh = chat(cclient, "Name three colours.")
    again = chat(cclient, "Name three colours.")
    assert fresh[0] == "miss" and again[0] == "hit"
    assert again[1] == fresh[1]
    assert again[2]["completion_tokens"] == fresh[2]["completion_tokens"]
    assert again[2].get("kvmesh_cache") == "hit"


def test_hit_streams_like_a_fresh_answer(cmesh, cclient) -> None:
    fresh_stream = chat(cclient, "Name two animals.", stream=True)
    plain_hit = chat(cclient, "Name two animals.")
    stream_hit = chat(cclient, "Name two animals.", stream=True)
    assert fresh_stream[0] == "miss"
    assert plain_hit[0] == stream_hit[0] == "hit"
    assert fresh_stream[1] == plain_hit[1] == stream_hit[1]
    assert stream_hit[2]["completion_tokens"] == fresh_stream[2]["completion_tokens"]


def test_seeded_requests_are_cached_and_sampled_ones_never(cmesh, cclient) -> None:
    seeded = [chat(cclient, "Say a word.", temperature=0.9, seed=7) for _ in range(2)]
    assert [s[0] for s in seeded] == ["miss", "hit"] and seeded[0][1] == seeded[1][1]
    before = cache_stats(cmesh[0])
    sampled = [chat(cclient, "Say a word.", temperature=0.9) for _ in range(2)]
    assert [s[0] for s in sampled] == [None, None]
    after = cache_stats(cmesh[0])
    assert (after.hits, after.misses) == (before.hits, before.misses)


def test_requests_differing_in_an_answer_changing_field_do_not_share_an_entry(
        cmesh, cclient) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    tool = {"type": "function", "function": {"name": "f", "parameters": schema}}
    base = chat(cclient, "Name a fruit.")
    assert base[0] == "miss" and chat(cclient, "Name a fruit.")[0] == "hit"
    for extra in ({"logit_bias": {"42": 5}}, {"response_format": {"type": "json_object"}},
                  {"tools": [tool]}, {"tools": [tool], "tool_choice": "none"}, {"seed": 3},
                  {"stop": ["\n"]}, {"logprobs": True}):
        first = chat(cclient, "Name a fruit.", **extra)
        assert first[0] == "miss", extra  # never the plain request's answer
        assert chat(cclient, "Name a fruit.", **extra)[0] == "hit", extra  # its own entry
    assert chat(cclient, "Name a fruit.", user="someone", metadata={"k": "v"})[0] == "hit"


def test_identical_concurrent_requests_compute_once(cmesh, cclient) -> None:
    before = cache_stats(cmesh[0])
    n = 6
    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(lambda _: chat(cclient, "Count from one to five."), range(n)))
    headers = sorted(r[0] for r in results)
    assert headers == ["hit"] * (n - 1) + ["miss"], headers
    assert len({r[1] for r in results}) == 1
    after = cache_stats(cmesh[0])
    assert after.leads - before.leads == 1
    assert after.waited_hits - before.waited_hits >= 1
    wait_idle(cmesh[0])  # the followers' overlapped routes were dropped at the worker


LONG = {"ignore_eos": True, "max_completion_tokens": 300}  # over chat()'s max_tokens


def test_a_leader_keeps_its_lease_past_the_lease_and_loses_it_when_it_dies(
        cmesh, cclient) -> None:
    """A leader's gateway renews its lease while it computes, so a follower of an answer that
    takes longer than the lease still waits for it (one computation); a leader whose gateway
    is killed lets the follower compute once the lease runs out, not after the 60 s
    `cache_lead_wait` (gateway/cache_route.py, cache/client.py)."""
    mesh = cmesh[0]
    doomed, doomed_url = start_gateway(mesh.nats_url, mesh.logs, "gateway-doomed",
                                       cache_lease_renew=str(LEASE_S / 4))
    other = OpenAI(base_url=doomed_url + "/v1", api_key="unused", max_retries=0, timeout=120)
    wait_until(lambda: call("GET", doomed_url + "/ready")[0] == 200, "the gateway is ready")
    try:
        for kill in (False, True):
            ask = f"Write a long story about a {'cat' if kill else 'dog'}."
            before = cache_stats(mesh)
            with ThreadPoolExecutor(1) as pool:
                lead = pool.submit(chat, other, ask, extra_body=LONG)
                wait_until(lambda b=before, f=lead: f.done() or cache_stats(mesh).leads > b.leads,
                           "a leader")
                assert not lead.done(), lead.result()  # the leader computes
                if kill:
                    doomed.stop(sig=signal.SIGKILL)
                started = time.monotonic()
                follower = chat(cclient, ask, extra_body=LONG)
                waited = time.monotonic() - started
                if not kill:  # it waited out several leases for the leader's answer
                    assert follower[0] == "hit" and follower[1] == lead.result()[1]
                    assert waited > 2 * LEASE_S
            if kill:  # computed again once the dead leader's lease ran out
                assert follower[0] == "miss" and follower[2]["completion_tokens"] == 300
                assert waited < 60  # the follower's `cache_lead_wait`: it did not wait it out
    finally:
        doomed.stop()


def wait_idle(mesh: Mesh, worker_id: str = "c1", timeout: float = 15.0) -> None:
    """Until the worker runs and queues nothing; a probe request first, so everything sent
    before it has reached the worker (router and worker take requests in order)."""
    from openai import OpenAI

    OpenAI(base_url=mesh.base_url + "/v1", api_key="unused").completions.create(
        model=MODEL, prompt="probe", max_tokens=1, temperature=1.0)  # never cached
    deadline = time.monotonic() + timeout
    while (s := mesh.stats(worker_id)).running or s.waiting:
        assert time.monotonic() < deadline, f"the worker is still busy: {s}"
        time.sleep(0.05)


def test_a_hit_answers_and_leaves_no_work_at_the_worker(cmesh, cclient) -> None:
    """With `cache_route_overlap` (the default) a cacheable request is routed while its lookup
    runs; on a hit that route is dropped and cancelled at the worker. The stored answer here
    is one whose fresh computation would run 1,000 tokens (most of a minute on this CPU):
    the worker must be idle again within seconds."""
    import redis

    mesh, server = cmesh
    args = server.proc.args
    body = {"model": MODEL, "prompt": "A stored answer, please.", "max_tokens": 1000,
            "temperature": 0, "ignore_eos": True}
    key = cache_key(parse_completion(dict(body)), "", mesh.stats("c1").revision)
    stored = [wire.Chunk("x", 0, 0, "from the cache", [42], finish_reason="length",
                         usage=wire.UsageInfo(5, 1))]
    redis.Redis(port=int(args[args.index("--port") + 1])).set(
        f"kvmesh:rc:{key}", wire.encode(wire.CacheHit(key, stored)))
    raw = cclient.completions.with_raw_response.create(
        model=MODEL, prompt=body["prompt"], max_tokens=1000, temperature=0,
        extra_body={"ignore_eos": True})
    assert raw.headers.get("x-kvmesh-cache") == "hit"
    assert raw.parse().choices[0].text == "from the cache"
    wait_idle(mesh)


def test_the_route_leaves_before_the_lookup(cmesh, cclient) -> None:
    """With `cache_route_overlap` the route is on the wire before the result-cache lookup is
    made (gateway/cache_route.py): a subscriber to both subjects on one connection sees the
    gateway's route to the router first, for each cacheable request."""
    mesh, _ = cmesh
    seen: list[str] = []

    async def on_msg(msg) -> None:
        seen.append(msg.subject)

    async def watch(ready: asyncio.Event, done: asyncio.Event) -> None:
        nc = await nats.connect(mesh.nats_url)
        try:
            for subject in (wire.ROUTER_GENERATE, wire.CACHE_GET):
                await nc.subscribe(subject, cb=on_msg)
            await nc.flush()
            ready.set()
            await done.wait()
            await nc.flush()
        finally:
            await nc.close()

    async def main() -> None:
        ready, done = asyncio.Event(), asyncio.Event()
        watcher = asyncio.ensure_future(watch(ready, done))
        await ready.wait()
        with ThreadPoolExecutor(1) as pool:
            for i in range(3):
                await asyncio.get_running_loop().run_in_executor(
                    pool, lambda i=i: chat(cclient, f"Which leaves first, round {i}?"))
        done.set()
        await watcher

    asyncio.run(main())
    assert seen == [wire.ROUTER_GENERATE, wire.CACHE_GET] * 3, seen


def test_a_stored_first_part_without_the_rest_is_a_miss_that_leads(cmesh) -> None:
    """A multi-part answer whose part 1 is gone (expired, or never put) is no answer: the
    lookup takes the lead (so someone recomputes) rather than waiting out `lead_wait`."""
    import redis

    mesh, server = cmesh
    args = server.proc.args
    port = int(args[args.index("--port") + 1])
    key = "test-partial-entry"
    redis.Redis(port=port).set(f"kvmesh:rc:{key}",
                               wire.encode(wire.CacheHit(key, [], part=0, parts=2)))

    async def ask() -> wire.Message:
        nc = await nats.connect(mesh.nats_url)
        try:
            msg = await nc.request(wire.CACHE_GET, wire.encode(wire.CacheGet(key, 5.0)),
                                   timeout=3)
            return wire.decode(msg.data, wire.CacheHit, wire.CacheMiss)
        finally:
            await nc.close()

    reply = asyncio.run(ask())
    assert isinstance(reply, wire.CacheMiss) and reply.lead, reply


def test_redis_stopped_requests_still_succeed(cmesh, cclient) -> None:
    """Last: it stops Redis."""
    mesh, redis = cmesh
    redis.stop(timeout=2)
    for content in ("Name three colours.", "A brand new question?"):
        header, text, usage = chat(cclient, content)
        assert header == "miss" and text and usage["completion_tokens"] > 0
    assert cache_stats(mesh).errors >= 1
