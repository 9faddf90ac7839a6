"""The gateway's own CPU per streamed token: one real gateway process between streaming clients
and a stand-in for the router and the worker that answers at a set engine speed.

    python bench/gateway_stream.py [--streams 64] [--tokens 128] [--step-ms 8] [--seconds 8]
                                   [--stream-interval 1] [--rounds 1]
                                   [--real-router | --hosted-router]

nats-server and one gateway process start (auth and the result cache off). This process plays
the router (answers `kvmesh.router.generate` with `Accepted`) and one worker (heartbeats, and
every `--step-ms` one `Deltas` frame with a one-token chunk for every open request, `--tokens`
a request, the last with usage; with `--stream-interval` N a request's chunk goes every N
steps with N tokens, as a worker with that setting sends them: the same tokens a second). A
child process runs `--streams` closed-loop streamed `/v1/completions` (bench/sse_client.py, reading
whatever arrives). Per round it prints the gateway's CPU over the window: µs per delivered
token and per request, and its share of a core. The stand-in does no tokenizing and no model
work, so the gateway's cost is what is left; compare trees by running this in each,
alternated. `--real-router` puts the real router (the default model's tokenizer, prompts of
`--prompt-words` words) between the gateway and the stand-in, which then plays the worker
only, and reports the router's CPU too; `--hosted-router` has the gateway host that router
(`colocate_router`, as `kvmesh up --hosted-router` runs it), so the gateway's CPU is both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import nats

from bench.gpu_serving import cpu_seconds
from kvmesh import wire
from kvmesh.cli import procs
from kvmesh.wire import (
    Accepted,
    Chunk,
    Deltas,
    GenerateRequest,
    Heartbeat,
    TokenizedRequest,
    UsageInfo,
)

MODEL = "bench-model"


class StandIn:
    """Router and worker: accepts every request and streams `tokens` tokens to it."""

    def __init__(self, tokens: int, interval: int) -> None:
        self.tokens, self.interval = tokens, interval
        self.open: dict[str, list] = {}  # request id -> [reply_to, seq, tokens made, sent]

    async def on_generate(self, msg) -> None:
        """As the router (`kvmesh.router.generate`) or, behind a real router, as the worker."""
        req = wire.decode(msg.data, GenerateRequest, TokenizedRequest)
        self.open[req.request_id] = [req.reply_to, 0, 0, 0]
        await msg.respond(wire.encode(Accepted(req.request_id, "bw", 8)))

    def frames(self) -> dict[str, Deltas]:
        out: dict[str, Deltas] = {}
        for rid, st in list(self.open.items()):
            st[2] += 1  # one token a step; sent as the worker's stream interval sends them
            n, last = st[2] - st[3], st[2] >= self.tokens
            if st[3] and n < self.interval and not last:
                continue
            st[3] = st[2]
            chunk = Chunk(rid, st[1], 0, " tok" * n, list(range(n)), None,
                          "length" if last else None,
                          UsageInfo(8, self.tokens, 0) if last else None)
            st[1] += 1
            out.setdefault(st[0], Deltas("bw")).chunks.append(chunk)
            if last:
                del self.open[rid]
        return out

    async def run(self, nc, step_s: float, stop_at: float) -> None:
        beat = 0.0
        while time.time() < stop_at:
            t0 = time.monotonic()
            if t0 - beat > 0.5:
                beat = t0
                await nc.publish(wire.HEARTBEAT, wire.encode(Heartbeat(
                    "bw", MODEL, len(self.open), 0, 0.0, 4096, 4096, max_model_len=4096,
                    sent_at=time.time())))
            for subject, frame in self.frames().items():
                await nc.publish(subject, wire.encode(frame))
            await asyncio.sleep(max(0.0, step_s - (time.monotonic() - t0)))


def client_main(url: str, streams: int, tokens: int, words: int, stop_at: float, q) -> None:
    import uvloop

    uvloop.run(_clients(url, streams, tokens, words, stop_at, q))


async def _clients(url: str, streams: int, tokens: int, words: int, stop_at: float, q) -> None:
    from urllib.parse import urlsplit

    from bench.sse_client import Stream

    done: list[tuple[float, int]] = []
    rng = random.Random(os.getpid())
    vocab = ["river", "stone", "light", "market", "engine", "quiet", "number", "garden"]
    where = urlsplit(url)

    async def one() -> None:
        stream = Stream(where.hostname or "127.0.0.1", where.port or 80)
        while time.time() < stop_at:
            body = {"model": MODEL, "max_tokens": tokens, "stream": True,
                    "stream_options": {"include_usage": True},
                    "prompt": " ".join(rng.choice(vocab) for _ in range(words))}
            reply = await stream.post("/v1/completions", {}, json.dumps(body).encode())
            done.append((time.time(), tokens if b'"usage":{' in reply.tail else 0))
        stream.close()

    await asyncio.gather(*(one() for _ in range(streams)))
    q.put(done)


async def one_round(args: argparse.Namespace, nats_url: str, url: str,
                    measured: dict[str, int]) -> dict:
    nc = await nats.connect(nats_url)
    stand = StandIn(args.tokens, args.stream_interval)
    routed = args.real_router or args.hosted_router
    subject = wire.worker_generate("bw") if routed else wire.ROUTER_GENERATE
    await nc.subscribe(subject, cb=stand.on_generate)
    await nc.flush()
    warm = 2.0
    start = time.time() + warm
    stop_at = start + args.seconds
    q = multiprocessing.get_context("spawn").Queue()
    kid = multiprocessing.get_context("spawn").Process(
        target=client_main, args=(url, args.streams, args.tokens, args.prompt_words, stop_at, q))
    kid.start()
    measured = {**measured, "clients": kid.pid}
    runner = asyncio.create_task(stand.run(nc, args.step_ms / 1e3, stop_at + 30))
    await asyncio.sleep(start - time.time())
    pids = {pid: name for name, pid in measured.items()}
    c0 = cpu_seconds(pids)
    await asyncio.sleep(stop_at - time.time())
    c1 = cpu_seconds(pids)
    done = await asyncio.get_running_loop().run_in_executor(None, q.get)
    kid.join()
    runner.cancel()
    await nc.close()
    window = [n for t, n in done if start <= t <= stop_at]
    tokens, out = sum(window), {}
    for name, pid in measured.items():
        cpu = c1[pid] - c0[pid]
        out[name] = {"cores": round(cpu / args.seconds, 3),
                     "us_per_token": round(cpu / max(1, tokens) * 1e6, 2),
                     "us_per_request": round(cpu / max(1, len(window)) * 1e6, 1)}
    return {"tokens": tokens, "requests": len(window), **out}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--step-ms", type=float, default=8.0)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--stream-interval", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--prompt-words", type=int, default=150)
    ap.add_argument("--real-router", action="store_true",
                    help="a real router (the default model's tokenizer) in front of the stand-in")
    ap.add_argument("--hosted-router", action="store_true",
                    help="the real router, hosted by the gateway process (colocate_router)")
    args = ap.parse_args()
    logs = Path(os.environ.get("TMPDIR", "/tmp")) / f"gateway-stream-{os.getpid()}"
    logs.mkdir(parents=True, exist_ok=True)
    port, gport = procs.free_port(), procs.free_port()
    nats_child = procs.start("nats", [procs.nats_server_binary(), "-a", "127.0.0.1", "-p",
                                      str(port)], log=open(logs / "nats.log", "ab"))  # noqa: SIM115
    procs.wait_port(port, 10, nats_child.proc)
    nats_url = f"nats://127.0.0.1:{port}"
    gw = procs.start("gateway", procs.service_argv("gateway"), env={
        "KVMESH_NATS_URL": nats_url, "KVMESH_GATEWAY_PORT": str(gport),
        "KVMESH_GATEWAY_AUTH": "0", "KVMESH_GATEWAY_RESULT_CACHE": "0",
        "KVMESH_GATEWAY_METRICS_PORT": "0", "KVMESH_LOG_LEVEL": "WARNING",
        "KVMESH_GATEWAY_COLOCATE_ROUTER": "1" if args.hosted_router else "0"},
        log=open(logs / "gateway.log", "ab"))  # noqa: SIM115
    children, measured = [gw, nats_child], {"gateway": gw.proc.pid}
    if args.real_router:
        router = procs.start("router", procs.service_argv("router"), env={
            "KVMESH_NATS_URL": nats_url, "KVMESH_ROUTER_METRICS_PORT": "0",
            "KVMESH_LOG_LEVEL": "WARNING"}, log=open(logs / "router.log", "ab"))  # noqa: SIM115
        children.insert(0, router)
        measured["router"] = router.proc.pid
    try:
        procs.wait_port(gport, 30, gw.proc)
        if args.real_router or args.hosted_router:
            asyncio.run(_router_ready(nats_url))
        for _ in range(args.rounds):
            got = asyncio.run(one_round(args, nats_url, f"http://127.0.0.1:{gport}", measured))
            print(json.dumps({"streams": args.streams, "stream_interval": args.stream_interval,
                              **got}), flush=True)
    finally:
        for child in children:
            child.stop(timeout=5)


async def _router_ready(nats_url: str, timeout: float = 120.0) -> None:
    """Wait until the router (its tokenizer loaded) answers a ping."""
    nc = await nats.connect(nats_url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                await nc.request(wire.ROUTER_PING, wire.encode(wire.Ping()), timeout=1)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)
    finally:
        await nc.close()


if __name__ == "__main__":
    main()
