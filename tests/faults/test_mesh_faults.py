"""Faults on a mesh of real services (nats-server, router, gateway, two SmolLM2 workers): garbage
on the router's and workers' subjects, prompts at the edge of the context, 100 concurrent
streams, nats-server restarted under load, a rolling SIGTERM restart of both workers under
load with zero failed requests, and full workers refusing with 503 instead of queueing. One
private mesh for the module (tests/integration/private_mesh); the tests run in file order and
the last two replace parts of it.

A worker killed mid-stream and a single worker's drain are proven elsewhere
(tests/integration/test_worker_failure.py, test_drain.py); docs/RELIABILITY.md lists them all.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.soak import run_soak
from kvmesh import wire
from kvmesh.cli import procs
from kvmesh.wire import ErrorReply
from tests.faults.garbage import GARBAGE, send_garbage
from tests.integration.conftest import MAX_MODEL_LEN, MODEL, Mesh
from tests.integration.helpers import open_stream, post, sse_events
from tests.integration.private_mesh import private_mesh, start_worker

CHAT = "/v1/chat/completions"
GRACE = 20.0


@pytest.fixture(scope="module")
def fm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mesh, list[procs.Child]]]:
    logs: Path = tmp_path_factory.mktemp("fault-mesh")
    with private_mesh(logs, workers=("a", "b"), grace_period=GRACE) as (m, nats_child):
        holder = [nats_child]
        yield m, holder
        holder[0].stop(timeout=3)  # a restarted nats-server is not the one private_mesh knows


def hello(i: int = 0, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": f"Say hi ({i})"}],
            "max_tokens": 4, **extra}


# -- garbage on every router and worker subject -----------------------------------------------

def _garbage(nats_url: str, worker_ids: list[str]) -> list[str]:
    request_subjects = [wire.ROUTER_GENERATE, wire.ROUTER_PING]
    for w in worker_ids:
        request_subjects += [wire.worker_generate(w), wire.worker_stats(w)]
    broadcasts = [wire.HEARTBEAT, wire.KV_EVENTS, wire.KV_RESYNC, wire.CANCEL]
    frames = [*GARBAGE, wire.encode(ErrorReply(500, "x", "y"))]
    return asyncio.run(send_garbage(nats_url, request_subjects, broadcasts, frames))


def test_garbage_on_router_and_worker_subjects_gets_errors_and_kills_nothing(fm) -> None:
    m, _ = fm
    assert _garbage(m.nats_url, sorted(m.workers)) == []
    time.sleep(1)
    assert all(c.alive for c in [*m.workers.values(), *m.others])
    status, body, _ = post(m.base_url + CHAT, hello())
    assert status == 200, body


# -- prompts at the edge of the context -------------------------------------------------------

def test_prompt_just_over_the_context_is_400_and_just_under_is_served(fm) -> None:
    m, _ = fm
    url = m.base_url + "/v1/completions"
    status, body, _ = post(url, {"model": MODEL, "prompt": [42] * MAX_MODEL_LEN, "max_tokens": 1})
    assert status == 400, body
    assert body["error"]["code"] == "context_length_exceeded"
    status, body, _ = post(url, {"model": MODEL, "prompt": [42] * (MAX_MODEL_LEN - 1),
                                 "max_tokens": 1})
    assert status == 200, body
    status, body, _ = post(url, {"model": MODEL, "prompt": [42] * (MAX_MODEL_LEN - 1),
                                 "max_tokens": 2})
    assert status == 400, body
    assert body["error"]["param"] == "max_tokens"


# -- soak, small ------------------------------------------------------------------------------

def test_100_concurrent_streams_all_complete_or_are_refused_cleanly(fm) -> None:
    m, _ = fm
    router, gateway = m.others
    pids = {"gateway": gateway.proc.pid, "router": router.proc.pid,
            **{w: c.proc.pid for w, c in m.workers.items()}}
    result = asyncio.run(run_soak(m.base_url, 100, max_tokens=4, timeout=120, pids=pids,
                                  settle_s=2))
    print(result.summary())
    assert result.bad == {}, result.summary()
    assert result.outcomes["ok"] >= 50, result.summary()
    for name, (before, _peak, after) in result.rss_mb.items():
        assert after < before * 1.25 + 64, (name, result.summary())


# -- nats-server restarted under load ---------------------------------------------------------

class Load:
    """`n` threads sending short requests (streamed and not) until stopped; every outcome is
    kept with the time it ended."""

    def __init__(self, base_url: str, n: int = 2) -> None:
        self.base_url = base_url
        self.results: list[tuple[float, int, str]] = []  # (time, status, error code or "")
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(n)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def _run(self, i: int) -> None:
        k = 0
        while not self._stop.is_set():
            k += 1
            self.results.append((time.monotonic(), *self._one(i * 100_000 + k, k % 2 == 0)))
            time.sleep(0.05)

    def _one(self, k: int, stream: bool) -> tuple[int, str]:
        try:
            if not stream:
                status, body, _ = post(self.base_url + CHAT, hello(k), timeout=60)
                return status, "" if status == 200 else str(body["error"]["code"])
            events = list(sse_events(open_stream(self.base_url + CHAT, hello(k), timeout=60)))
            errors = [e for e in events if e.startswith('{"error"')]
            if events[-1:] != ["[DONE]"]:
                return 200, "no-done"
            return (200, "") if not errors else (200, "stream-error:" + errors[-1][:80])
        except Exception as exc:  # urllib raises HTTPError for a refused stream
            code = getattr(exc, "code", 0)
            return code, f"{type(exc).__name__}"

    def failures(self, since: float = 0.0) -> Counter[str]:
        return Counter(f"{s} {c}" for t, s, c in self.results if t >= since and c)


def test_nats_restart_under_load_recovers_within_seconds(fm) -> None:
    m, holder = fm
    port = int(m.nats_url.rsplit(":", 1)[1])
    with Load(m.base_url) as load:
        time.sleep(3)
        assert load.results and not load.failures(), load.failures()
        holder[0].stop(timeout=2)  # SIGTERM: nats-server closes every connection
        down_at = time.monotonic()
        time.sleep(2)
        holder[0] = procs.start("nats", [procs.nats_server_binary(), "-a", "127.0.0.1", "-p",
                                         str(port)], log=open(m.logs / "nats.log", "ab"))  # noqa: SIM115
        procs.wait_port(port, 10, holder[0].proc)
        up_at = time.monotonic()
        deadline = up_at + 30
        while not [r for r in load.results if r[0] > up_at + 0.5 and r[1] == 200 and not r[2]]:
            assert time.monotonic() < deadline, load.failures(down_at)
            time.sleep(0.2)
        recovered_s = min(r[0] for r in load.results if r[0] > up_at + 0.5 and not r[2]) - up_at
        time.sleep(3)
        steady_from = time.monotonic()
        time.sleep(3)
    print(f"nats down {up_at - down_at:.1f}s; first success {recovered_s:.1f}s after restart;"
          f" failures while down: {dict(load.failures(down_at))}")
    assert recovered_s < 15
    # While nats was down requests failed with a clear status, never a hang or a 500.
    for line in load.failures(down_at):
        status = int(line.split()[0])
        assert status in (502, 503, 504) or (status == 200 and "stream-error" in line), line
    assert not load.failures(steady_from), load.failures(steady_from)
    assert all(c.alive for c in [*m.workers.values(), *m.others])


# -- rolling restart of both workers under load ------------------------------------------------

def test_rolling_sigterm_restart_of_both_workers_loses_no_request(fm) -> None:
    m, _ = fm
    with Load(m.base_url) as load:
        time.sleep(2)
        for old, new in (("a", "a2"), ("b", "b2")):
            child = m.workers[old]
            os.kill(child.proc.pid, signal.SIGTERM)
            assert child.proc.wait(timeout=GRACE + 5) == 0
            m.workers.pop(old)
            start_worker(m, new, GRACE)
            m.wait_ready(2)
            time.sleep(1)
        time.sleep(2)
    served = [r for r in load.results if r[1] == 200 and not r[2]]
    assert not load.failures(), load.failures()
    assert len(served) >= 10, len(served)


# -- full workers refuse instead of queueing past every timeout -------------------------------

def test_full_workers_refuse_with_503_and_retry_after(fm, monkeypatch) -> None:
    """Workers with one batch slot and one queue slot each (KVMESH_WORKER_MAX_NUM_SEQS=1,
    KVMESH_WORKER_MAX_WAITING=1): of 12 concurrent streams, 4 fit; the rest get 503 with
    Retry-After at once, never a 504 from a queue that outlived the gateway's chunk timeout."""
    m, _ = fm
    monkeypatch.setenv("KVMESH_WORKER_MAX_NUM_SEQS", "1")
    monkeypatch.setenv("KVMESH_WORKER_MAX_WAITING", "1")
    for old, new in (("a2", "c1"), ("b2", "c2")):
        m.workers.pop(old).stop(timeout=GRACE)
        start_worker(m, new, GRACE)
    m.wait_ready(2)
    time.sleep(1)  # the router has seen both
    result = asyncio.run(run_soak(m.base_url, 12, max_tokens=16, timeout=120, retries=0,
                                  settle_s=0))
    print(result.summary())
    assert result.bad == {}, result.summary()
    assert result.outcomes["ok"] >= 2 and result.outcomes["refused"] >= 4, result.summary()
