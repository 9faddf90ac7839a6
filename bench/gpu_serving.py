"""Serving through the mesh against the engine in-process, on the same model and prompts.

One run: (1) the engine alone in a fresh process, as a worker runs it (one prompt alone for
TTFT and the decode step; then a closed loop at each level for `--engine-duration` seconds);
(2) `kvmesh up` in fresh processes (auth and result cache on, `--gateways` gateway processes)
and closed-loop streamed `/v1/completions` at each `--levels` concurrency from `--clients`
client processes (never the bottleneck: each parses only what it must). Per level: output
tok/s, requests, errors, TTFT and ITL P50/P99, each mesh process's CPU share, and from the
services' /metrics the mean TTFT by hop, the engine's steps and each service's event-loop
lag (`means`), and each service's full GC collections (`gc_full`); the engine alone reports
its steps alike, with its CUDA graph counts and full collections (warm-up included; its heap
is frozen once loaded, as the engine process's is). `--tracing` adds the median waterfall
of a traced request's spans (sample with `OTEL_TRACES_SAMPLER_ARG`). Prompts are
`--prompt-words` random words (unique per request, so neither cache answers), `max_tokens`
tokens each with `ignore_eos`, greedy.

    python bench/gpu_serving.py --model /tmp/smollm2 --load-format dummy --out $OUT
    python bench/gpu_serving.py --model /tmp/llama-8b --load-format dummy --levels 1,256

`--engine-cpus 3,11` places the engine on those CPUs, alone and in the mesh (`kvmesh up
--engine-cpus`), with this process and its clients off them.

ITL here is the time per output token after the first, per request ((end - first token) /
(tokens - 1)): with coalesced deltas one SSE event may carry several tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import multiprocessing
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

WORDS = ("time person year way day thing man world life hand part child eye woman place work "  # noqa: SIM905
         "week case point government company number group problem fact water room mother area "
         "money story month lot right study book job word business issue side kind head house "
         "service friend father power hour game line end member law car city community name "
         "president team minute idea kid body information back parent face others level office "
         "door health art war history party result change morning reason research girl guy "
         "moment air teacher force education").split()
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from kvmesh.cpu_sets import parse_cpus  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def prompt(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


# -- the engine alone ---------------------------------------------------------------------------

def engine_main(args: argparse.Namespace) -> None:
    """In its own process, as a worker's engine runs: one prompt alone (TTFT, decode step),
    then a closed loop at each level (a finished request is replaced at once) for
    `--engine-duration` seconds: the steady state the mesh's closed loop is compared with."""
    from inference import LLM, SamplingParams
    from kvmesh import gc_heap

    if args.engine_cpus:  # placed as `kvmesh up --engine-cpus` places the mesh's engine
        cpus = parse_cpus(args.engine_cpus)
        os.sched_setaffinity(0, cpus)
        import torch

        torch.set_num_threads(len(cpus))
    llm = LLM(args.model, load_format=args.load_format, max_num_seqs=args.max_num_seqs,
              max_num_batched_tokens=args.max_num_batched_tokens,
              max_model_len=args.max_model_len)
    gc_heap.freeze()  # as a worker's engine process does once loaded (engine_loop.run)
    engine = llm.engine
    rng = random.Random(1)
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0, ignore_eos=True)
    llm.generate([prompt(rng, args.prompt_words) for _ in range(32)], params)  # warm-up
    ttfts, steps = [], []
    for i in range(5):
        engine.add_request(f"single-{i}", llm.tokenizer.encode(prompt(rng, args.prompt_words)),
                           params)
        start = time.perf_counter()
        first = last = 0.0
        n = 0
        while engine.has_unfinished():
            for out in engine.step():
                last = time.perf_counter()
                n += len(out.token_ids)
                first = first or last
        ttfts.append(first - start)
        steps.append((last - first) / max(1, n - 1))
    levels, step_stats = {}, {}
    for level in [int(x) for x in args.levels.split(",")]:
        before = _graph_counts(engine)
        levels[level], steps_seen = _closed_loop(llm, level, params, rng, args)
        step_stats[level] = {k: v - before[k] for k, v in _graph_counts(engine).items()}
        step_stats[level].update(steps_seen)
    print("ENGINE " + json.dumps({
        "ttft_ms": pct(ttfts, 0.5) * 1e3, "decode_step_ms": pct(steps, 0.5) * 1e3,
        "out_tok_s": levels, "steps": step_stats}), flush=True)


def _graph_counts(engine: Any) -> dict[str, int]:
    """The CUDA graph runner's counters (cuda_graphs.py): how the steps ran."""
    dec = engine.graph_decoder
    names = ("mixed_replays", "split_replays", "eager_steps")
    return {k: getattr(dec, k, 0) if dec is not None else 0 for k in names}


def _closed_loop(llm: Any, level: int, params: Any, rng: random.Random,
                 args: argparse.Namespace) -> tuple[float, dict[str, float]]:
    """Output tok/s with `level` requests always in flight (tokens of the window's steps),
    and the window's steps: their mean sequences and milliseconds (the mesh's `means`).
    The prompts are tokenized before the clock starts: a worker's engine process gets token
    ids (the router tokenizes), so tokenizing is no part of what the mesh is compared with."""
    engine = llm.engine
    ids = iter(range(1 << 30))
    # More than a window's requests at 256 streams and 60k tok/s: each prompt unique, as the
    # mesh's are (a faster run reuses them, from the first, and may hit the prefix cache).
    prompts = itertools.cycle([llm.tokenizer.encode(prompt(rng, args.prompt_words))
                               for _ in range(max(level * 32, 2048))])
    for _ in range(level):
        first = replace(params, max_tokens=_first_length(rng, args)) if args.stagger else params
        engine.add_request(f"c{next(ids)}", next(prompts), first)
    t0 = time.perf_counter()
    start, stop = t0 + args.warmup, t0 + args.warmup + args.engine_duration
    tokens = steps = seqs = 0
    gc_full = gc.get_stats()[2]["collections"]
    busy = 0.0  # seconds inside the steps that ran something, as the worker's histogram times
    while (now := time.perf_counter()) < stop:
        outputs = engine.step()
        if start <= now and engine.last_batch:
            steps, seqs = steps + 1, seqs + len(engine.last_batch)
            busy += time.perf_counter() - now
        for out in outputs:
            if start <= now:
                tokens += len(out.token_ids)
            if out.usage is not None:
                engine.add_request(f"c{next(ids)}", next(prompts), params)
    for rid in list(engine._requests):
        engine.abort(rid)
    while engine.has_unfinished():
        engine.step()
    return tokens / args.engine_duration, {
        "batch_seqs": round(seqs / max(1, steps), 1),
        "step_ms": round(1e3 * busy / max(1, steps), 3),
        "gc_full": gc.get_stats()[2]["collections"] - gc_full,
        "steps_per_s": round(steps / args.engine_duration, 1)}


def _first_length(rng: random.Random, args: argparse.Namespace) -> int:
    """`--stagger`: a stream's first request is 1..max_tokens long, so the streams' requests
    end (and are replaced) spread over a request's lifetime, as a server's arrivals are,
    instead of all together in waves (equal lengths, started together)."""
    return rng.randint(1, args.max_tokens)


def run_engine(args: argparse.Namespace) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--engine-only", *sys.argv[1:]]
    out = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("ENGINE "):
            return json.loads(line[7:])
    raise RuntimeError(f"engine run failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")


# -- the mesh -----------------------------------------------------------------------------------

def start_mesh(args: argparse.Namespace, logs: Path, otlp: str) -> tuple[subprocess.Popen, str]:
    env = {**os.environ,
           "KVMESH_WORKER_MAX_NUM_SEQS": str(args.max_num_seqs),
           "KVMESH_WORKER_MAX_NUM_BATCHED_TOKENS": str(args.max_num_batched_tokens),
           "KVMESH_WORKER_MAX_MODEL_LEN": str(args.max_model_len),
           "KVMESH_WORKER_MAX_WAITING": "4096",
           "KVMESH_WORKER_LOAD_FORMAT": args.load_format,
           "KVMESH_WORKER_STREAM_INTERVAL": str(args.stream_interval),
           "KVMESH_ROUTER_MAX_CONCURRENCY": "2048",
           "KVMESH_LOG_LEVEL": "WARNING"}
    if args.model:
        env["KVMESH_MODEL"] = args.model
    from kvmesh.cli.procs import free_port

    args.metrics_port = free_port()
    argv = [sys.executable, "-m", "kvmesh.cli", "up", "--port", str(args.port),
            "--gateways", str(args.gateways),
            "--state-dir", str(logs), "--nats-port", str(free_port()),
            "--redis-port", str(free_port()), "--metrics-port", str(args.metrics_port)]
    if otlp:
        argv += ["--otlp-endpoint", otlp]
    if args.engine_cpus:
        argv += ["--engine-cpus", args.engine_cpus]
    if args.hosted_router:
        argv += ["--hosted-router", "1"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + 600
    assert proc.stdout is not None
    said = []
    try:
        for line in proc.stdout:
            said.append(line)
            if line.startswith("kvmesh:"):  # how it chose to run (polling, CPUs), for the log
                print(line.rstrip(), flush=True)
            m = re.search(r"API key .*: (kvm_\S+)", line)
            if m:
                return proc, m.group(1)
            if time.monotonic() > deadline:
                break
    except BaseException:  # a SIGTERM (`timeout`) while it comes up: take the mesh with us
        stop_mesh(proc)
        raise
    stop_mesh(proc)
    raise RuntimeError(f"kvmesh up did not come up; logs in {logs}:\n{''.join(said[-30:])}")


def stop_mesh(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def process_tree(root: int) -> dict[int, str]:
    """Every descendant of `root`, named by what it runs."""
    parents: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
                parents[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    tree, frontier = {}, [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid:
                frontier.append(child)
                tree[child] = _name(child)
    return tree


def _name(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [c.decode(errors="replace") for c in cmd if c]
    if any("spawn_main" in w for w in words):
        return "engine"
    for svc in ("gateway", "router", "worker", "auth", "cache"):
        if svc in words or "gateway.server" in words:
            return svc if svc in words else "gateway"
    base = Path(words[0]).name if words else "?"
    if base.startswith(("redis", "nats")):
        return base[:5].rstrip("-")
    return "gateway-supervisor" if base.startswith("python") else base


# Where the time to a first token goes inside the mesh (each service's histogram of it, from
# the clock that service starts), and the engine's steps: how many sequences, how long. From
# kvmesh up's /metrics ports (`--metrics-port`: the router, the worker, auth, cache, the
# gateways, each with the router it hosts under `--hosted-router`).
HOPS = {"gateway_ttft_ms": "kvmesh_gateway_time_to_first_token_seconds",
        "route_ms": "kvmesh_router_route_latency_seconds",
        "worker_queue_ms": "kvmesh_worker_queue_time_seconds",
        "worker_ttft_ms": "kvmesh_worker_time_to_first_token_seconds",
        "step_ms": "kvmesh_worker_engine_step_seconds",
        "batch_seqs": "kvmesh_worker_engine_batch_size"}
LAG = "kvmesh_event_loop_lag_seconds"  # per service (telemetry/loop_lag.py)
GC2 = 'python_gc_collections_total{generation="2"}'  # per service: the full collections


def hop_totals(first_port: int, ports: int) -> dict[str, tuple[float, float]]:
    """(sum, count) of each `HOPS` histogram over every /metrics port that answers, of each
    service's loop lag (`lag_<service>_ms`), and (0, count) of its full GC collections
    (`gc2_<service>`)."""
    import urllib.request

    totals = dict.fromkeys(HOPS, (0.0, 0.0))
    for port in range(first_port, first_port + ports):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            continue
        info = text.partition("\nkvmesh_service_info{")[2].partition("}")[0]
        service = info.partition('service="')[2].partition('"')[0]
        for line in text.splitlines():
            if line.startswith(GC2):  # full collections: a count, kept as (0, n)
                _add(totals, f"gc2_{service}", "_count " + line.rsplit(" ", 1)[1])
            for hop, family in HOPS.items():
                if line.startswith(family):
                    _add(totals, hop, line[len(family):])
            if line.startswith(LAG):  # one mean per service: lag_gateway_ms, lag_router_ms, ..
                label = line.partition('service="')[2].partition('"')[0]
                _add(totals, f"lag_{label}_ms", line[len(LAG):])
    return totals


def _add(totals: dict[str, tuple[float, float]], key: str, rest: str) -> None:
    """Add a histogram's `_sum` or `_count` line (`rest`: after its family name) to `key`."""
    s, c = totals.get(key, (0.0, 0.0))
    if rest.startswith("_sum"):
        totals[key] = (s + float(rest.rsplit(" ", 1)[1]), c)
    elif rest.startswith("_count"):
        totals[key] = (s, c + float(rest.rsplit(" ", 1)[1]))


def cpu_seconds(pids: dict[int, str]) -> dict[int, float]:
    out = {}
    for pid in pids:
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[pid] = (int(f[11]) + int(f[12])) / TICK
        except (OSError, ValueError, IndexError):
            pass
    return out


# -- the load -----------------------------------------------------------------------------------

def client_main(url: str, key: str, model: str, streams: int, seed: int, args_json: str,
                start_at: float, stop_at: float, queue: Any) -> None:
    import uvloop  # as the services run: half the client's CPU per event of asyncio's loop

    uvloop.run(_client(url, key, model, streams, seed, json.loads(args_json), start_at,
                       stop_at, queue))


async def _client(url: str, key: str, model: str, streams: int, seed: int, a: dict[str, Any],
                  start_at: float, stop_at: float, queue: Any) -> None:
    """`streams` closed-loop streams, each on its own keep-alive connection (bench/sse_client.py:
    the clients share the host with the mesh, so they do as little per event as they can)."""
    from urllib.parse import urlsplit

    from bench.sse_client import Stream

    rng = random.Random(seed)
    results: list[tuple[float, float | None, float, int, bool]] = []
    errors: dict[str, int] = {}
    body = {"model": model, "max_tokens": a["max_tokens"], "temperature": 0,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    headers = {"Authorization": f"Bearer {key}"}
    where = urlsplit(url)

    async def one_stream() -> None:
        stream = Stream(where.hostname or "127.0.0.1", where.port or 80)
        length = rng.randint(1, a["max_tokens"]) if a["stagger"] else a["max_tokens"]
        while time.time() < stop_at:
            t0 = time.time()
            first, tokens, ok = None, 0, False
            payload = json.dumps({**body, "max_tokens": length,
                                  "prompt": prompt(rng, a["prompt_words"])}).encode()
            try:
                reply = await stream.post("/v1/completions", headers, payload)
                if reply.status != 200:
                    why = f"{reply.status} {reply.tail[:200]!r}"
                    errors[why] = errors.get(why, 0) + 1
                else:  # the first token's event came first; usage and [DONE] are the tail
                    first, tokens = reply.first, _usage_tokens(reply.tail)
                    ok = tokens > 0 and b"data: [DONE]" in reply.tail[-64:]
            except OSError as exc:
                errors[repr(exc)[:200]] = errors.get(repr(exc)[:200], 0) + 1
            results.append((t0, first, time.time(), tokens, ok))
            length = a["max_tokens"]  # after a stream's first request (see --stagger)
        stream.close()

    await asyncio.gather(*(one_stream() for _ in range(streams)))
    queue.put((results, errors))


def _usage_tokens(tail: bytes) -> int:
    """Completion tokens of the usage event in a stream's last bytes (0 if there is none)."""
    at = tail.rfind(b"data: {", 0, tail.rfind(b'"usage":{') + 1)
    if at < 0:
        return 0
    event = tail[at + 6:].split(b"\n", 1)[0]
    return json.loads(event)["usage"]["completion_tokens"]


def run_level(url: str, key: str, model: str, level: int, args: argparse.Namespace,
              pids: dict[int, str]) -> dict[str, Any]:
    n_clients = max(1, min(args.clients, level))
    per = [level // n_clients + (1 if i < level % n_clients else 0) for i in range(n_clients)]
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    now = time.time()
    start_at, stop_at = now + 3 + args.warmup, now + 3 + args.warmup + args.duration
    a = json.dumps({"max_tokens": args.max_tokens, "prompt_words": args.prompt_words,
                    "stagger": args.stagger})
    procs = [ctx.Process(target=client_main, args=(url, key, model, k, 1000 * level + i, a,
                                                   start_at, stop_at, q)) for i, k in
             enumerate(per)]
    for p in procs:
        p.start()
    pids = {**pids, **{p.pid: "clients" for p in procs}}  # the load's own CPU, reported too
    time.sleep(max(0.0, start_at - time.time()))
    ports = 4 + args.gateways  # (a router process), one worker, auth, cache, gateways
    cpu0, hops0 = cpu_seconds(pids), hop_totals(args.metrics_port, ports)
    time.sleep(max(0.0, stop_at - time.time()))
    cpu1, hops1 = cpu_seconds(pids), hop_totals(args.metrics_port, ports)
    results, errors = [], {}
    for _ in procs:
        got, errs = q.get()
        results += got
        for k, v in errs.items():
            errors[k] = errors.get(k, 0) + v
    for p in procs:
        p.join()
    window = [r for r in results if start_at <= r[2] <= stop_at]
    good = [r for r in window if r[4]]
    shares: dict[str, float] = {}
    for pid, name in pids.items():
        if pid in cpu0 and pid in cpu1:
            shares[name] = shares.get(name, 0.0) + (cpu1[pid] - cpu0[pid]) / args.duration
    return {
        "streams": level, "out_tok_s": window_tokens(results, start_at, stop_at) / args.duration,
        "requests": len(good), "errors": len(window) - len(good),
        "ttft_p50_ms": pct([(r[1] - r[0]) * 1e3 for r in good if r[1]], 0.5),
        "ttft_p99_ms": pct([(r[1] - r[0]) * 1e3 for r in good if r[1]], 0.99),
        "itl_p50_ms": pct([(r[2] - r[1]) * 1e3 / (r[3] - 1) for r in good if r[1] and r[3] > 1],
                          0.5),
        "itl_p99_ms": pct([(r[2] - r[1]) * 1e3 / (r[3] - 1) for r in good if r[1] and r[3] > 1],
                          0.99),
        "cpu_cores": {k: round(v, 2) for k, v in sorted(shares.items())},
        "means": {k: round((1 if k == "batch_seqs" else 1e3) * (hops1[k][0] - s)
                           / (hops1[k][1] - c), 2) for k, (s, c) in hops0.items()
                  if not k.startswith("gc2_") and k in hops1 and hops1[k][1] > c},
        "gc_full": {k[4:]: hops1[k][1] - hops0.get(k, (0, 0))[1] for k in hops1
                    if k.startswith("gc2_")},
        "steps_per_s": round((hops1["step_ms"][1] - hops0["step_ms"][1]) / args.duration, 1),
        "error_kinds": dict(sorted(errors.items(), key=lambda kv: -kv[1])[:5]),
    }


def window_tokens(results: list[tuple[float, float | None, float, int, bool]],
                  start_at: float, stop_at: float) -> float:
    """The tokens streamed inside [start_at, stop_at]: each good request's tokens spread evenly
    from its first token to its end, the part inside the window counted, as the engine alone
    counts the tokens its steps made inside its window. Counting whole requests that ended
    inside it instead (as before the forty-sixth session) drops or adds up to a wave of
    requests when the streams run in lockstep (not staggered): 8B shapes at 256 streams,
    ~2.5 s a request, counted four whole waves (1,024 requests) in a 10 s window where the
    engine alone made 4.85 waves' worth of tokens, and read 82 %."""
    total = 0.0
    for _, first, end, tokens, ok in results:
        if not ok or first is None or end < start_at or first > stop_at:
            continue
        if end <= first:  # every token in one event
            total += tokens if start_at <= end <= stop_at else 0
            continue
        inside = min(end, stop_at) - max(first, start_at)
        total += tokens * max(0.0, inside) / (end - first)
    return total


def waterfall(spans: list[Any]) -> dict[str, list[float]]:
    """Where a request's time to its first token goes: per span of a streamed request, the
    median start and end (ms) after its gateway span starts; `first token at worker` and
    `first token at gateway` from those spans' `kvmesh.ttft_ms`."""
    by_trace: dict[str, dict[str, Any]] = {}
    for s in spans:
        by_trace.setdefault(s.trace_id, {})[s.name] = s
    offsets: dict[str, list[tuple[float, float]]] = {}
    for trace in by_trace.values():
        root = next((s for n, s in trace.items() if n.startswith("POST ")), None)
        gen = trace.get("inference.generate")
        if root is None or gen is None or "kvmesh.ttft_ms" not in root.attrs:
            continue
        for name in ("auth.verify", "cache.lookup", "router.route", "inference.generate"):
            if name in trace:
                s = trace[name]
                offsets.setdefault(name, []).append(((s.start_ns - root.start_ns) / 1e6,
                                                     (s.end_ns - root.start_ns) / 1e6))
        if "kvmesh.ttft_ms" in gen.attrs:
            at = (gen.start_ns - root.start_ns) / 1e6 + gen.attrs["kvmesh.ttft_ms"]
            offsets.setdefault("first token at worker", []).append((at, at))
        ttft = root.attrs["kvmesh.ttft_ms"]
        offsets.setdefault("first token at gateway", []).append((ttft, ttft))
    return {name: [round(pct([a for a, _ in xs], 0.5), 2), round(pct([b for _, b in xs], 0.5), 2)]
            for name, xs in offsets.items()}


def served_model(url: str, key: str) -> str:
    import urllib.request

    req = urllib.request.Request(url + "/v1/models", headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())["data"][0]["id"]


def parser() -> argparse.ArgumentParser:
    """The flags of this benchmark; `start_mesh` reads the mesh's from what it parses (other
    benchmarks that start a mesh parse their settings with it too)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--load-format", default="auto")
    ap.add_argument("--levels", default="1,32,128,256,512")
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--gateways", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--prompt-words", type=int, default=150)
    ap.add_argument("--engine-duration", type=float, default=10.0)
    ap.add_argument("--max-num-seqs", type=int, default=256)
    ap.add_argument("--max-num-batched-tokens", type=int, default=16384)
    ap.add_argument("--max-model-len", type=int, default=4096)
    ap.add_argument("--port", type=int, default=0, help="the gateway's; 0 = a free one")
    ap.add_argument("--tracing", action="store_true", help="sample every request, export OTLP")
    ap.add_argument("--stream-interval", type=int, default=1,
                    help="the worker's: tokens a stream's chunks gather before they are sent")
    ap.add_argument("--stagger", action="store_true",
                    help="first request of each stream 1..max-tokens long (engine and mesh)")
    ap.add_argument("--skip-engine", action="store_true")
    ap.add_argument("--engine-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--engine-cpus", default="",
                    help="the engine's CPUs, alone and in the mesh (kvmesh up --engine-cpus); "
                         "the clients run off them")
    ap.add_argument("--hosted-router", action="store_true",
                    help="a router in each gateway process (kvmesh up --hosted-router), "
                         "not a router process")
    ap.add_argument("--out", default="")
    return ap


def main() -> None:
    # `timeout` sends SIGTERM: unwind through the `finally`s, so the mesh (its own session,
    # an engine holding GPU memory) stops with this process instead of outliving it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args = parser().parse_args()
    if args.engine_only:
        engine_main(args)
        return
    if args.engine_cpus:  # this process and the clients it starts: off the engine's CPUs
        os.sched_setaffinity(0, os.sched_getaffinity(0) - set(parse_cpus(args.engine_cpus)))
    label = f"{Path(args.model or 'default').name}, {args.gateways} gateway(s), " \
            f"tracing {'on' if args.tracing else 'off'}" + \
            (f", stream interval {args.stream_interval}" if args.stream_interval > 1 else "")
    report: dict[str, Any] = {"label": label, "args": vars(args)}
    if not args.skip_engine:
        report["engine"] = run_engine(args)
        print(f"engine: {json.dumps(report['engine'])}", flush=True)
    receiver = None
    otlp = ""
    if args.tracing:
        sys.path.insert(0, str(ROOT))
        from kvmesh.cli.procs import free_port
        from tests.integration.otlp_receiver import OtlpReceiver

        receiver = OtlpReceiver(free_port()).start()
        otlp = receiver.endpoint
    logs = Path(tempfile.mkdtemp(prefix="kvmesh-serving-"))
    if not args.port:
        from kvmesh.cli.procs import free_port

        args.port = free_port()
    proc, key = start_mesh(args, logs, otlp)
    url = f"http://127.0.0.1:{args.port}"
    try:
        model = served_model(url, key)
        pids = process_tree(proc.pid)
        report["levels"] = []
        for level in [int(x) for x in args.levels.split(",")]:
            row = run_level(url, key, model, level, args, pids)
            report["levels"].append(row)
            print(json.dumps(row), flush=True)
        if receiver is not None:
            time.sleep(6)  # the services' batch exporters flush every few seconds
            report["spans_received"] = len(receiver.spans)
            report["span_names"] = sorted({f"{s.service}:{s.name}" for s in receiver.spans})
            report["waterfall_p50_ms"] = waterfall(receiver.spans)
            print(f"waterfall: {json.dumps(report['waterfall_p50_ms'])}", flush=True)
    finally:
        stop_mesh(proc)
        if args.out:  # what the services said, for a run that went wrong
            tails = [f"== {f.name}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-60:])
                     for f in sorted((logs / "logs").glob("*.log"))]
            Path(args.out).mkdir(parents=True, exist_ok=True)
            Path(args.out, f"logs-{Path(args.model or 'default').name}.txt").write_text(
                "\n".join(tails))
    print_table(report)
    if args.out:
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", label)[:60]
        Path(args.out, f"serving-{name}.json").write_text(json.dumps(report, indent=1))


def print_table(report: dict[str, Any]) -> None:
    eng = report.get("engine", {})
    print(f"\n{report['label']}; engine in-process: "
          + (f"TTFT {eng['ttft_ms']:.1f} ms, decode step {eng['decode_step_ms']:.2f} ms"
             if eng else "not run"))
    print("| streams | out tok/s | engine tok/s | mesh / engine | req | err | TTFT p50/p99 ms | "
          "ITL p50/p99 ms | CPU cores |")
    for r in report.get("levels", []):
        base = eng.get("out_tok_s", {}).get(str(r["streams"])) or \
            eng.get("out_tok_s", {}).get(r["streams"])
        share = f"{100 * r['out_tok_s'] / base:.0f} %" if base else "-"
        cores = ", ".join(f"{k} {v}" for k, v in r["cpu_cores"].items())
        print(f"| {r['streams']} | {r['out_tok_s']:,.0f} | {base or 0:,.0f} | {share} | "
              f"{r['requests']} | {r['errors']} | {r['ttft_p50_ms']:.1f} / "
              f"{r['ttft_p99_ms']:.1f} | {r['itl_p50_ms']:.2f} / {r['itl_p99_ms']:.2f} | "
              f"{cores} |")


if __name__ == "__main__":
    main()
