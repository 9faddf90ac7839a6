"""Soak: N concurrent streaming requests against a CPU mesh; nothing hangs, nothing is lost,
memory comes back.

Every request is a streaming chat completion (SmolLM2, `--max-tokens` tokens, a distinct prompt)
from one asyncio client (aiohttp, one connection per request). Each one must end in one of:
- `ok`: HTTP 200, content, a finish_reason, `data: [DONE]`, no error event;
- `refused`: 429/503 with `Retry-After` (the client honours it up to `--retries` times, so a
  refusal counts only when the retries run out too);
and never `hung` (no end within `--timeout` seconds), a stream without [DONE], an error event,
another status or a connection error. RSS of the gateway, router and worker processes is read
from /proc before (after a warm-up), at the peak and after (once the mesh is idle again).

    python -m bench.soak [--streams 1000] [--max-tokens 4] [--workers 2] [--max-num-seqs 16]
                         [--max-waiting 16] [--retries 30] [--rounds 2] [--timeout 300] [--url URL]

Without `--url` it starts its own mesh on free ports (tests/integration/private_mesh.py:
nats-server, router, gateway, `--workers` SmolLM2 workers with one torch thread each, batches of
`--max-num-seqs`, each refusing with 503 past `--max-waiting` queued requests, so its queue
drains well within the gateway's 20 s chunk timeout on a CPU) and stops it afterwards.
`run_soak` is what tests/faults/test_mesh_faults.py runs with 100 streams.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

MODEL = "SmolLM2-135M-Instruct"


@dataclass
class SoakResult:
    streams: int
    wall_s: float
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    retried: int = 0  # requests that were refused at least once, then retried
    latencies: list[float] = field(default_factory=list)  # of `ok` requests, seconds
    rss_mb: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    @property
    def bad(self) -> dict[str, int]:
        return {k: v for k, v in self.outcomes.items() if k not in ("ok", "refused")}

    def summary(self) -> str:
        lat = sorted(self.latencies) or [0.0]
        p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
        lines = [f"{self.streams} streams in {self.wall_s:.1f}s: {dict(self.outcomes)}, "
                 f"{self.retried} retried after Retry-After",
                 f"latency of ok streams: p50 {p(0.5):.2f}s p90 {p(0.9):.2f}s "
                 f"p99 {p(0.99):.2f}s max {lat[-1]:.2f}s mean {statistics.fmean(lat):.2f}s"]
        for name, (before, peak, after) in self.rss_mb.items():
            lines.append(f"RSS {name}: {before:.0f} MB before, {peak:.0f} MB peak, "
                         f"{after:.0f} MB after")
        return "\n".join(lines)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def one_stream(session: aiohttp.ClientSession, url: str, i: int, max_tokens: int,
                     timeout: float, retries: int) -> tuple[str, float, bool]:
    """(outcome, seconds, whether it was retried)."""
    body = {"model": MODEL, "stream": True, "max_tokens": max_tokens, "temperature": 0,
            "messages": [{"role": "user", "content": f"Say a number: {i}"}]}
    started = time.monotonic()
    retried = False
    try:
        async with asyncio.timeout(timeout):
            for attempt in range(retries + 1):
                async with session.post(url + "/v1/chat/completions", json=body) as resp:
                    if resp.status in (429, 503):
                        wait = resp.headers.get("Retry-After")
                        err = (await resp.json(content_type=None)).get("error", {})
                        if wait is None or not err.get("message"):
                            return f"{resp.status}-without-retry-after", 0.0, retried
                        if attempt < retries:
                            retried = True
                            await asyncio.sleep(float(wait))
                            continue
                        return "refused", 0.0, retried
                    if resp.status != 200:
                        return f"http-{resp.status}", 0.0, retried
                    return (await _read_sse(resp), time.monotonic() - started, retried)
    except TimeoutError:
        return "hung", 0.0, retried
    except aiohttp.ClientError as exc:
        return f"client-error-{type(exc).__name__}", 0.0, retried
    return "refused", 0.0, retried


async def _read_sse(resp: aiohttp.ClientResponse) -> str:
    done = finished = False
    text = ""
    async for raw in resp.content:
        line = raw.decode().strip()
        if not line.startswith("data: "):
            continue
        data = line[6:]
        if data == "[DONE]":
            done = True
            continue
        event = json.loads(data)
        if "error" in event:
            return f"error-event-{event['error'].get('code')}"
        for choice in event.get("choices", []):
            text += choice.get("delta", {}).get("content") or ""
            finished = finished or bool(choice.get("finish_reason"))
    if not done:
        return "no-done"
    return "ok" if finished and text else "empty"


async def run_soak(url: str, streams: int, max_tokens: int = 4, timeout: float = 300.0,
                   retries: int = 3, pids: dict[str, int] | None = None,
                   settle_s: float = 5.0) -> SoakResult:
    """Warm up, take RSS, send `streams` concurrent streams, wait for idle, take RSS again."""
    pids = pids or {}
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        for i in range(4):  # warm-up: first-request allocations are not a leak
            await one_stream(session, url, -i, max_tokens, timeout, retries)
        before = {n: rss_mb(p) for n, p in pids.items()}
        peak = dict(before)
        result = SoakResult(streams, 0.0)
        started = time.monotonic()
        tasks = [asyncio.create_task(one_stream(session, url, i, max_tokens, timeout, retries))
                 for i in range(streams)]
        pending = set(tasks)
        while pending:
            _, pending = await asyncio.wait(pending, timeout=0.5)
            for n, p in pids.items():
                peak[n] = max(peak[n], rss_mb(p))
        result.wall_s = time.monotonic() - started
        for task in tasks:
            outcome, seconds, retried = task.result()
            result.outcomes[outcome] += 1
            result.retried += retried
            if outcome == "ok":
                result.latencies.append(seconds)
    await asyncio.sleep(settle_s)  # let the services finish their bookkeeping
    result.rss_mb = {n: (before[n], peak[n], rss_mb(p)) for n, p in pids.items()}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--max-tokens", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--retries", type=int, default=30)
    ap.add_argument("--max-num-seqs", type=int, default=16,
                    help="workers' batch size (own mesh only)")
    ap.add_argument("--max-waiting", type=int, default=16,
                    help="workers' max_waiting (own mesh only): their queue past the batch")
    ap.add_argument("--rounds", type=int, default=2, help="soaks in a row on one mesh")
    ap.add_argument("--url", default="", help="an already running gateway (no RSS then)")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # one socket per stream, twice
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * args.streams + 256)),
                                                hard))
    if args.url:
        print(asyncio.run(run_soak(args.url, args.streams, args.max_tokens, args.timeout,
                                   args.retries)).summary())
        return
    from tests.integration.private_mesh import private_mesh

    os.environ["KVMESH_WORKER_MAX_WAITING"] = str(args.max_waiting)  # the workers inherit them
    os.environ["KVMESH_WORKER_MAX_NUM_SEQS"] = str(args.max_num_seqs)
    with tempfile.TemporaryDirectory() as tmp:
        workers = tuple(f"w{i}" for i in range(args.workers))
        with private_mesh(Path(tmp), workers=workers) as (m, _nats):
            router, gateway = m.others
            pids = {"gateway": gateway.proc.pid, "router": router.proc.pid,
                    **{w: c.proc.pid for w, c in m.workers.items()}}
            for round_ in range(1, args.rounds + 1):  # a leak grows each round
                result = asyncio.run(run_soak(m.base_url, args.streams, args.max_tokens,
                                              args.timeout, args.retries, pids))
                print(f"round {round_}: {result.summary()}", flush=True)


if __name__ == "__main__":
    main()
