"""One stream's first token through `kvmesh up`, hop by hop, from marks in every process.

    python bench/hop_marks.py [--model FOLDER --load-format dummy] [--requests 150]
        [--max-tokens 16] [--prompt-words 150] [--hosted-router] [--no-result-cache]

Starts `kvmesh up` (one gateway, auth and result cache on) with `bench/hop_marks_site` first on
its processes' PYTHONPATH and `KVMESH_HOP_MARKS` set, so each process writes the time a request
passes each point of `sitecustomize.POINTS` (gateway handler, route out, router handler, its
request to the worker, worker handler, engine, ...). Sends `--requests` streamed
`/v1/completions` one after another (greedy, unique prompts, the first few as warm-up), and per
request follows the chain of marks from the client's send to its first body bytes (each mark
the first of its name after the one before). Prints, per point, the median time after the
client sent and the step from the point before: where the mesh's part of the first token goes.
Unlike the traced waterfall (`bench/ttft_waterfall.py`) nothing is exported and no span is
made, and the marks sit at the hand-offs between processes. Clocks: every process reads
`time.time_ns()` on one machine. A process that leaves no marks fails the run (its module was
not patched: the point list no longer matches the code).
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gpu_serving import prompt, served_model, start_mesh, stop_mesh  # noqa: E402
from bench.sse_client import Stream  # noqa: E402

CHAIN = ["gateway_handler", "gateway_opens", "gateway_routes", "router_handler",
         "router_asks_worker", "worker_handler", "worker_sent_to_engine", "engine_has_it",
         "engine_prompt_launched", "engine_token_out", "worker_step", "worker_publishes",
         "gateway_deltas", "gateway_writes"]
# Points a run may not pass: the plain loop (CPU) hands the first token out of the prompt's call.
OPTIONAL = {"engine_prompt_launched"}
WARMUP = 5


async def send(port: int, key: str, model: str, n: int, args: argparse.Namespace,
               rng: random.Random) -> list[tuple[int, int]]:
    """(sent, first body bytes) in ns for `n` requests, one after another."""
    stream = Stream("127.0.0.1", port)
    body = {"model": model, "max_tokens": args.max_tokens, "temperature": 0,
            "ignore_eos": True, "stream": True}
    headers = {"Authorization": f"Bearer {key}"}
    out = []
    for _ in range(n):
        payload = json.dumps({**body, "prompt": prompt(rng, args.prompt_words)}).encode()
        sent = time.time_ns()
        reply = await stream.post("/v1/completions", headers, payload)
        if reply.status != 200 or reply.first is None:
            raise RuntimeError(f"request failed: {reply.status} {reply.tail[:200]!r}")
        out.append((sent, int(reply.first * 1e9)))
    stream.close()
    return out


def read_marks(folder: Path, chain: list[str]) -> list[tuple[int, str]]:
    """Every mark of every process, in time order; RuntimeError if a point never marked."""
    marks = []
    for f in folder.glob("*.marks"):
        for line in f.read_text().splitlines():
            name, t = line.split()
            marks.append((int(t), name))
    missing = set(chain) - OPTIONAL - {name for _, name in marks}
    if missing:
        raise RuntimeError(f"no marks for {sorted(missing)}: bench/hop_marks_site's POINTS "
                           "no longer match the code")
    return sorted(marks)


def follow(marks: list[tuple[int, str]], requests: list[tuple[int, int]],
           chain: list[str]) -> dict[str, list[float]]:
    """Per point, ms after the client sent, for each request whose whole chain lies between
    its send and its first bytes."""
    times = [t for t, _ in marks]
    rows: dict[str, list[float]] = {name: [] for name in [*chain, "client_first_bytes"]}
    for sent, first in requests:
        at, got = sent, {}
        for name in chain:
            i = bisect.bisect_left(times, at)
            hit = next((t for t, n in marks[i:] if n == name), None)
            if hit is None or hit > first:
                if name in OPTIONAL:
                    continue
                break
            got[name] = at = hit
        else:
            got["client_first_bytes"] = first
            for name, t in got.items():
                rows[name].append((t - sent) / 1e6)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--load-format", default="auto")
    ap.add_argument("--requests", type=int, default=150)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--prompt-words", type=int, default=150)
    ap.add_argument("--hosted-router", action="store_true")
    ap.add_argument("--no-result-cache", action="store_true")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="hop-marks-"))
    os.environ["KVMESH_HOP_MARKS"] = str(folder)
    site = str(ROOT / "bench" / "hop_marks_site")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (site, os.environ.get("PYTHONPATH", "")) if p)
    if args.no_result_cache:
        os.environ["KVMESH_GATEWAY_RESULT_CACHE"] = "0"
    from kvmesh.cli.procs import free_port

    mesh_args = argparse.Namespace(
        max_num_seqs=256, max_num_batched_tokens=16384, max_model_len=4096,
        load_format=args.load_format, stream_interval=1, port=free_port(), gateways=1,
        engine_cpus="", hosted_router=args.hosted_router,
        model=str(Path(args.model).resolve()) if args.model else None)
    proc, key = start_mesh(mesh_args, Path(tempfile.mkdtemp(prefix="hop-marks-logs-")), "")
    try:
        model = served_model(f"http://127.0.0.1:{mesh_args.port}", key)
        requests = uvloop.run(send(mesh_args.port, key, model, args.requests, args,
                                   random.Random(1)))[WARMUP:]
    finally:
        stop_mesh(proc)
    chain = [n for n in CHAIN if not (args.hosted_router and n == "router_handler")]
    rows = follow(read_marks(folder, chain), requests, chain)
    print(f"{len(rows['client_first_bytes'])} of {len(requests)} requests followed; "
          f"ms after the client sent (P50) and the step from the point before")
    print("| point | ms | step |\n|---|---|---|")
    last = 0.0
    for name, xs in rows.items():
        if not xs:
            continue  # an optional point no request passed
        p50 = statistics.median(xs)
        print(f"| {name} | {p50:.3f} | {p50 - last:+.3f} |")
        last = p50


if __name__ == "__main__":
    main()
