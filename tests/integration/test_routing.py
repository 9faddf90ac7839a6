"""KV-aware routing on a mesh of its own (two workers, `kv` policy, overload at 1 queued
request so the guard is easy to trigger): shared prefixes go to the worker that holds them, an
overloaded holder is passed over, a fresh router rebuilds its index from the workers, a paused
worker receives nothing, and a worker killed before its first token costs the client nothing."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from tests.integration.conftest import MODEL, Mesh
from tests.integration.routing_mesh import own_mesh, restart_router

SYSTEM_A = "You are a meticulous librarian who answers in one word. " + " ".join(
    f"Rule {i}: shelve book {i} by author, then title, then year." for i in range(30)
)
SYSTEM_B = "You are a pirate who only talks about the sea. " + " ".join(
    f"Fact {i}: wave {i} is bigger than wave {i - 1}." for i in range(30)
)


@pytest.fixture(scope="module")
def rmesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    logs: Path = tmp_path_factory.mktemp("routing-mesh")
    with own_mesh(logs, {"KVMESH_ROUTER_OVERLOAD_QUEUE": "1"}) as (m, _redis):
        yield m


@pytest.fixture(scope="module")
def rclient(rmesh: Mesh):
    from openai import OpenAI

    return OpenAI(base_url=rmesh.base_url + "/v1", api_key="unused", max_retries=0, timeout=60)


def ask(client, system: str, question: str, max_tokens: int = 2, **extra) -> tuple[str, int]:
    """(worker, prefix overlap) of one sampled (so never result-cached) chat request."""
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL,
        max_tokens=max_tokens,
        temperature=0.8,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
        **extra,
    )
    raw.parse()
    return raw.headers["x-kvmesh-worker"], int(raw.headers["x-kvmesh-prefix-overlap"])


def test_shared_prefix_goes_to_the_worker_that_holds_it(rmesh: Mesh, rclient) -> None:
    holder, overlap = ask(rclient, SYSTEM_A, "Where is book 7?")
    assert overlap == 0
    time.sleep(1.0)  # the KV event reaches the router
    for q in ("Where is book 3?", "Who wrote book 12?", "When was book 20 printed?"):
        worker, overlap = ask(rclient, SYSTEM_A, q)
        assert worker == holder
        assert overlap >= 10, overlap
        time.sleep(0.6)  # a heartbeat clears the router's count of requests sent (overload 1)


def test_overloaded_holder_is_passed_over(rmesh: Mesh, rclient) -> None:
    holder, _ = ask(rclient, SYSTEM_A, "Where is book 1?")
    time.sleep(0.6)  # a heartbeat clears the router's count of requests sent (overload 1)
    stream = rclient.chat.completions.create(
        model=MODEL,
        max_tokens=400,
        temperature=0.8,
        stream=True,
        extra_body={"ignore_eos": True},
        messages=[{"role": "system", "content": SYSTEM_A}, {"role": "user", "content": "Go."}],
    )
    try:
        next(iter(stream))
        # The stream usually lands on the holder; if the router still counted the first
        # request as pending (until the next heartbeat), the other worker holds it now. Either
        # way the busy one is the one to pass over.
        busy = stream.response.headers["x-kvmesh-worker"]
        assert busy == holder or stream.response.headers["x-kvmesh-prefix-overlap"] == "0"
        # Once a heartbeat shows it running (0.5 s apart, later on a loaded machine),
        # requests for the prefix must go to the other worker; before that they may not.
        deadline = time.monotonic() + 8.0
        worker = busy
        while worker == busy and time.monotonic() < deadline:
            time.sleep(0.3)
            worker, _ = ask(rclient, SYSTEM_A, "Where is book 2?")
        assert worker != busy, "the overloaded worker kept getting its prefix's requests"
    finally:
        stream.close()


def test_fresh_router_rebuilds_index_from_workers(rmesh: Mesh, rclient) -> None:
    holder, _ = ask(rclient, SYSTEM_B, "How big is wave 3?")
    time.sleep(0.6)  # let the other test's cancelled stream drain
    restart_router(rmesh)
    rmesh.wait_ready(2)
    time.sleep(1.0)  # resync answers arrive
    worker, overlap = ask(rclient, SYSTEM_B, "How big is wave 9?")
    assert (worker, overlap >= 10) == (holder, True), (worker, overlap)


def test_paused_worker_receives_nothing_until_it_returns(rmesh: Mesh, rclient) -> None:
    holder, _ = ask(rclient, SYSTEM_B, "How big is wave 5?")
    child = rmesh.workers[holder]
    child.proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(4.0)  # > worker_dead_after (2 s), with room for a slow router: it drops it
        with SubjectCounter(rmesh.nats_url, f"kvmesh.worker.{holder}.generate") as sent:
            for q in ("How big is wave 6?", "How big is wave 7?"):
                time.sleep(0.6)
                worker, _ = ask(rclient, SYSTEM_B, q)
                assert worker != holder
        assert sent.count == 0, "the router still offered work to the paused worker"
    finally:
        child.proc.send_signal(signal.SIGCONT)
    time.sleep(1.5)
    seen = set()
    for i in range(6):
        seen.add(ask(rclient, f"Session {i}. " + SYSTEM_A, "hi", user=f"s{i}")[0])
        time.sleep(0.6)
    assert holder in seen  # back in rotation


class SubjectCounter:
    """Counts the messages published on one NATS subject while the `with` block runs."""

    def __init__(self, nats_url: str, subject: str):
        self.nats_url, self.subject, self.count = nats_url, subject, 0
        self._subscribed, self._stop = threading.Event(), threading.Event()

    def __enter__(self) -> SubjectCounter:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._watch()), daemon=True)
        self._thread.start()
        assert self._subscribed.wait(10), "could not subscribe"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    async def _watch(self) -> None:
        nc = await nats.connect(self.nats_url)
        try:

            async def seen(_msg) -> None:
                self.count += 1

            await nc.subscribe(self.subject, cb=seen)
            await nc.flush()
            self._subscribed.set()
            while not self._stop.is_set():
                await asyncio.sleep(0.05)
            await nc.flush()
        finally:
            await nc.close()


def first_worker_asked(nats_url: str, timeout: float = 30.0) -> str:
    """Block until a router forwards a request to a worker; return that worker's id."""

    async def watch() -> str:
        nc = await nats.connect(nats_url)
        try:
            sub = await nc.subscribe("kvmesh.worker.*.generate")
            ready.set()
            msg = await sub.next_msg(timeout=timeout)
            return msg.subject.split(".")[2]
        finally:
            await nc.close()

    return asyncio.run(watch())


ready = threading.Event()


def test_worker_killed_before_first_token_completes_elsewhere(rmesh: Mesh, rclient) -> None:
    """Last: it kills a worker, the moment the router forwards a request to it (so long before
    its prefill of a long prompt ends). The client still gets a full answer, from the other."""
    prompt = " ".join(f"item{i} costs {i * 7 % 13} coins;" for i in range(70))
    victim: list[str] = []
    watcher = threading.Thread(target=lambda: victim.append(first_worker_asked(rmesh.nats_url)))
    watcher.start()
    assert ready.wait(10)
    answer: dict[str, object] = {}

    def call() -> None:
        raw = rclient.chat.completions.with_raw_response.create(
            model=MODEL,
            max_tokens=2,
            temperature=0.8,
            messages=[{"role": "user", "content": prompt}],
        )
        answer["worker"] = raw.headers["x-kvmesh-worker"]
        answer["text"] = raw.parse().choices[0].message.content

    caller = threading.Thread(target=call)
    caller.start()
    watcher.join(30)
    assert victim, "no request reached a worker"
    rmesh.workers[victim[0]].stop(timeout=0, sig=signal.SIGKILL)
    caller.join(60)
    assert answer.get("worker") not in (None, victim[0]), answer
    assert answer["text"]
