"""KV-aware vs round-robin routing on a shared-prefix workload, and result-cache hit latency.

Starts one mesh (nats-server, router, result cache on redis-server, gateway, two CPU workers
with SmolLM2, one torch thread each), then for each policy restarts the router with it and
sends the same shape of workload: `--prompts` long system prompts (~400 tokens each), `--users`
users per prompt asking short questions, `--concurrency` requests in flight, sampled (never
result-cached), a few tokens each. Each policy gets its own system prompts, so neither inherits
the other's warm cache. TTFT is time to the first content delta of the SSE stream; prefix hit
rate is cached prompt tokens / prompt tokens from `usage`. Then the result cache: the same
greedy request fresh (a miss) and again (a hit), whole-answer latency.

    python -m bench.routing [--prompts 4] [--users 8] [--concurrency 2] [--max-tokens 4]
                            [--kv-blocks 256]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from openai import OpenAI

from tests.integration.conftest import MODEL
from tests.integration.routing_mesh import own_mesh, restart_router


def system_prompt(tag: str, i: int) -> str:
    return f"[{tag}-{i}] You are assistant number {i} of team {tag}. " + " ".join(
        f"Guideline {j}: when asked about topic {j * (i + 3) % 97}, answer briefly and cite "
        f"rule {j}."
        for j in range(24)
    )


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def one(client: OpenAI, system: str, question: str, max_tokens: int) -> tuple[float, float]:
    """(TTFT ms, prefix hit fraction) of one streamed request."""
    t0 = time.perf_counter()
    ttft = None
    usage = None
    stream = client.chat.completions.create(
        model=MODEL,
        max_tokens=max_tokens,
        temperature=0.8,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
        messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
    )
    for ev in stream:
        if ttft is None and ev.choices and ev.choices[0].delta.content:
            ttft = (time.perf_counter() - t0) * 1000
        if ev.usage is not None:
            usage = ev.usage
    assert ttft is not None and usage is not None
    details = usage.prompt_tokens_details
    cached = (details.cached_tokens or 0) if details else 0
    return ttft, cached / usage.prompt_tokens


def run_policy(client: OpenAI, tag: str, args: argparse.Namespace) -> dict[str, float]:
    work = [
        (system_prompt(tag, i), f"User {u}: what about topic {u * 7 + i}?")
        for u in range(args.users)
        for i in range(args.prompts)
    ]
    # Arrivals in a fixed random order: in prompt order, round-robin over an even number of
    # workers would send each prompt to the same worker every time, by accident.
    random.Random(0).shuffle(work)
    with ThreadPoolExecutor(args.concurrency) as pool:
        results = list(pool.map(lambda w: one(client, w[0], w[1], args.max_tokens), work))
    ttfts = [r[0] for r in results]
    return {
        "p50": statistics.median(ttfts),
        "p99": pct(ttfts, 0.99),
        "mean": statistics.fmean(ttfts),
        "hit": statistics.fmean(r[1] for r in results),
    }


def cache_latency(client: OpenAI, n: int) -> tuple[list[float], list[float]]:
    fresh, hit = [], []
    for i in range(n):
        msgs = [{"role": "user", "content": f"Give me fact number {i} about the moon."}]
        for into in (fresh, hit):
            t0 = time.perf_counter()
            client.chat.completions.create(model=MODEL, max_tokens=16, temperature=0, messages=msgs)
            into.append((time.perf_counter() - t0) * 1000)
    return fresh, hit


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=4)
    ap.add_argument("--cache-requests", type=int, default=10)
    ap.add_argument("--kv-blocks", type=int, default=256, help="each worker's KV pool, blocks")
    args = ap.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="kvmesh-bench-routing-"))
    rows = {}
    with own_mesh(logs, num_kv_blocks=args.kv_blocks) as (mesh, _redis):
        client = OpenAI(
            base_url=mesh.base_url + "/v1", api_key="unused", max_retries=0, timeout=120
        )
        for policy in ("kv", "round-robin"):
            restart_router(mesh, {"KVMESH_ROUTER_POLICY": policy})
            mesh.wait_ready(2)
            time.sleep(1.5)  # the new router hears heartbeats and resyncs the KV index
            rows[policy] = run_policy(client, policy, args)
            print(policy, rows[policy], flush=True)
        fresh, hit = cache_latency(client, args.cache_requests)
    n = args.prompts * args.users
    print(
        f"\n{n} requests per policy, {args.prompts} system prompts x {args.users} users, "
        f"concurrency {args.concurrency}, max_tokens {args.max_tokens}; logs in {logs}\n"
    )
    print("| policy | TTFT P50 (ms) | TTFT P99 (ms) | TTFT mean (ms) | prefix hit rate |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['p50']:.0f} | {r['p99']:.0f} | {r['mean']:.0f} | {r['hit']:.0%} |")
    ratio = rows["round-robin"]["p50"] / rows["kv"]["p50"]
    print(f"\nTTFT P50 round-robin / kv: {ratio:.2f}x")
    print("\n| result cache (16 tokens, greedy) | P50 (ms) | P99 (ms) |")
    print("|---|---|---|")
    for name, xs in (("fresh (miss)", fresh), ("cache hit", hit)):
        print(f"| {name} | {statistics.median(xs):.1f} | {pct(xs, 0.99):.1f} |")


if __name__ == "__main__":
    main()
