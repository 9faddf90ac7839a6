"""Mesh overhead at low load: gateway -> router -> worker against the same engine in-process.

For each prompt (one request at a time, greedy, `ignore_eos`, fixed `max_tokens`) the benchmark
runs the request on an in-process `LLMEngine`, then through a mesh it starts itself (nats-server,
one worker, a router process and a gateway as `kvmesh up` runs them, or with `--hosted-router`
a gateway hosting the router; same engine config and torch threads), alternating so both see the
same machine load. TTFT is time to the first token's text (the first SSE content delta through
the mesh); total is time to the last token (to `[DONE]` through the mesh). Overhead is mesh
minus in-process for the same prompt and repetition; the table prints P50/P99. `--model` with
`--load-format dummy` serves a model folder with random weights (`bench/shaped_model.py
smollm2 <dir>/SmolLM2-135M-Instruct --layers 2`: two layers make the engine's step short, so
the hops stand out of its noise).

    python bench/mesh_overhead.py [--requests 40] [--max-tokens 16] [--threads 1]
        [--model FOLDER --load-format dummy] [--hosted-router]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from kvmesh.cli import procs

PROMPTS = [
    "Explain what a KV cache is.",
    "Write a haiku about the sea.",
    "What is the capital of France?",
    "List three prime numbers.",
    "Why is the sky blue?",
]


@dataclass
class Timing:
    ttft: float
    total: float


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def run_in_process(engine: Any, prompt: str, max_tokens: int, rid: str) -> Timing:
    from inference.engine.sampling_params import SamplingParams

    tok = engine.tokenizer
    ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": prompt}],
                                             add_generation_prompt=True))
    params = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)
    start = time.perf_counter()
    engine.add_request(rid, ids, params)
    ttft = None
    while engine.has_unfinished():
        for out in engine.step():
            if ttft is None and out.text:
                ttft = time.perf_counter() - start
    total = time.perf_counter() - start
    return Timing(ttft if ttft is not None else total, total)


async def run_mesh(session: aiohttp.ClientSession, url: str, model: str, prompt: str,
                   max_tokens: int) -> Timing:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": True,
            "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}
    start = time.perf_counter()
    ttft = None
    async with session.post(url + "/v1/chat/completions", json=body) as resp:
        resp.raise_for_status()
        async for raw in resp.content:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"]
            if ttft is None and delta and delta[0].get("delta", {}).get("content"):
                ttft = time.perf_counter() - start
    total = time.perf_counter() - start
    return Timing(ttft if ttft is not None else total, total)


def start_mesh(args: argparse.Namespace, logs: Path) -> tuple[list[procs.Child], str]:
    nats_port, http_port = procs.free_port(), procs.free_port()
    nats_url = f"nats://127.0.0.1:{nats_port}"
    env = {"KVMESH_NATS_URL": nats_url, "KVMESH_LOG_LEVEL": "WARNING",
           # the bare request path: no auth actor, no result-cache lookup, no metrics ports
           "KVMESH_GATEWAY_AUTH": "0", "KVMESH_GATEWAY_RESULT_CACHE": "0",
           "KVMESH_ROUTER_METRICS_PORT": "0", "KVMESH_WORKER_METRICS_PORT": "0",
           "KVMESH_WORKER_LOAD_FORMAT": args.load_format,
           "KVMESH_GATEWAY_COLOCATE_ROUTER": "1" if args.hosted_router else "0"}
    if args.model:
        env["KVMESH_MODEL"] = args.model

    def log(name: str) -> Any:
        return open(logs / f"{name}.log", "wb")

    children = [procs.start_nats(nats_port, log("nats"))]
    if not args.hosted_router:
        children.append(procs.start("router", procs.service_argv("router"), env, log("router")))
    children.append(procs.start("worker", procs.service_argv("worker"), {
        **env, "KVMESH_WORKER_WORKER_ID": "bench",
        "KVMESH_WORKER_TORCH_THREADS": str(args.threads)}, log("worker")))
    children.append(procs.start("gateway", procs.service_argv(
        "gateway", "--port", str(http_port)), env, log("gateway")))
    return children, f"http://127.0.0.1:{http_port}"


async def wait_ready(session: aiohttp.ClientSession, url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            async with session.get(url + "/ready") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.3)
    raise TimeoutError("mesh not ready")


def row(name: str, xs: list[float]) -> str:
    ms = [x * 1000 for x in xs]
    return f"| {name:<26} | {percentile(ms, 0.5):9.2f} | {percentile(ms, 0.99):9.2f} | " \
           f"{statistics.mean(ms):9.2f} |"


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each engine")
    ap.add_argument("--model", default=None, help="a model folder; default: the default model")
    ap.add_argument("--load-format", default="auto", help="dummy: random weights")
    ap.add_argument("--hosted-router", action="store_true",
                    help="the gateway hosts the router, not a router process")
    args = ap.parse_args()

    import torch

    from inference.engine.config import EngineConfig
    from inference.engine.engine import LLMEngine
    from inference.worker import served_name

    torch.set_num_threads(args.threads)
    logs = Path(tempfile.mkdtemp(prefix="kvmesh-bench-"))
    children, url = start_mesh(args, logs)
    model = served_name(args.model)
    try:
        engine = LLMEngine.from_model(args.model, EngineConfig(load_format=args.load_format))
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, url)
            for p in PROMPTS:  # warm both paths
                run_in_process(engine, p, args.max_tokens, f"warm-{p}")
                await run_mesh(session, url, model, p, args.max_tokens)
            local: list[Timing] = []
            mesh: list[Timing] = []
            for i in range(args.requests):
                p = PROMPTS[i % len(PROMPTS)]
                local.append(run_in_process(engine, p, args.max_tokens, f"r{i}"))
                mesh.append(await run_mesh(session, url, model, p, args.max_tokens))
    finally:
        for c in children:
            c.stop()
    print(f"\nmesh overhead: {args.requests} sequential chat requests, {args.max_tokens} tokens "
          f"each, greedy, torch threads {args.threads} (ms)\n")
    print("| metric                     |       P50 |       P99 |      mean |")
    print("|----------------------------|-----------|-----------|-----------|")
    print(row("TTFT in-process", [t.ttft for t in local]))
    print(row("TTFT mesh", [t.ttft for t in mesh]))
    print(row("TTFT overhead", [m.ttft - t.ttft for m, t in zip(mesh, local, strict=True)]))
    print(row("total in-process", [t.total for t in local]))
    print(row("total mesh", [t.total for t in mesh]))
    print(row("total overhead", [m.total - t.total for m, t in zip(mesh, local, strict=True)]))


if __name__ == "__main__":
    asyncio.run(main())
