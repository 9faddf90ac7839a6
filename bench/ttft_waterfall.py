"""Where a request's time to first token goes, hop by hop, read from its trace.

    python bench/ttft_waterfall.py [--model FOLDER --load-format dummy] [--requests 40]
        [--prompt-words 20] [--out DIR]

Starts `kvmesh up` (one gateway, auth and result cache on) exporting every span to an
in-process OTLP receiver, sends `--requests` streamed `/v1/completions` one after another (one
token each, unique prompts so no cache answers), and lines each request's spans up against the
moment its gateway span began. Per hop, the median start and end (ms after the gateway began)
and the client's TTFT; the gaps between hops are what the mesh adds. `n` says in how many
traces a hop appeared (a hop in a few only, such as `auth.lookup_key` when the gateway's
identity cache is cold, is not on the usual path). `mesh overhead` is per request: the client's
TTFT minus that request's own engine step time (its trace found by `x-request-id`), so a noisy
prefill (a shared CPU) cancels out. Clocks: spans and the client share this machine's wall
clock.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HOPS = ["auth.verify", "auth.lookup_key", "auth.admit", "cache.lookup", "router.route",
        "inference.generate", "engine.step"]


def stream_once(url: str, key: str, model: str, prompt: str) -> tuple[int, float, str]:
    """Send one streamed completion; (start ns, TTFT ms, request id)."""
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": 1, "stream": True,
                       "temperature": 0}).encode()
    req = urllib.request.Request(url + "/v1/completions", data=body, headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    start = time.time_ns()
    with urllib.request.urlopen(req, timeout=60) as resp:
        rid = resp.headers.get("x-request-id", "")
        for line in resp:
            if line.startswith(b"data: {"):
                return start, (time.time_ns() - start) / 1e6, rid
    raise RuntimeError("no token came back")


def overheads(spans: list, ttfts: dict[str, float]) -> list[float]:
    """Per request: client TTFT (ms, by request id) minus its trace's engine step time."""
    trace_of = {s.attrs.get("kvmesh.x_request_id"): s.trace_id for s in spans
                if s.parent_id == "" and s.service.endswith("gateway")}
    step_ms: dict[str, float] = {}
    for s in spans:
        if s.name == "engine.step":
            step_ms[s.trace_id] = step_ms.get(s.trace_id, 0.0) + (s.end_ns - s.start_ns) / 1e6
    return [ttft - step_ms[trace_of[rid]] for rid, ttft in ttfts.items()
            if trace_of.get(rid) in step_ms]


def waterfall(spans: list) -> dict[str, tuple[float, float, int]]:
    """Median (start, end) in ms after each request's gateway span began, and the number of
    traces it was in, per hop."""
    by_trace: dict[str, list] = {}
    for s in spans:
        by_trace.setdefault(s.trace_id, []).append(s)
    rows: dict[str, list[tuple[float, float]]] = {}
    for group in by_trace.values():
        roots = [s for s in group if s.parent_id == "" and s.service.endswith("gateway")]
        if not roots:
            continue
        t0 = roots[0].start_ns
        rows.setdefault("gateway", []).append((0.0, (roots[0].end_ns - t0) / 1e6))
        for s in group:
            if s.name in HOPS:
                rows.setdefault(s.name, []).append(((s.start_ns - t0) / 1e6,
                                                    (s.end_ns - t0) / 1e6))
    return {k: (statistics.median(a for a, _ in v), statistics.median(b for _, b in v), len(v))
            for k, v in rows.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--load-format", default="auto")
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--prompt-words", type=int, default=20)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    from bench.gpu_serving import parser, served_model, start_mesh, stop_mesh
    from kvmesh.cli.procs import free_port
    from tests.integration.otlp_receiver import OtlpReceiver

    receiver = OtlpReceiver(free_port()).start()
    mesh_args = parser().parse_args([
        "--load-format", args.load_format, "--port", str(free_port()), "--gateways", "1",
        "--max-num-seqs", "64", "--max-num-batched-tokens", "2048", "--max-model-len", "2048",
        *(["--model", args.model] if args.model else [])])
    proc, key = start_mesh(mesh_args, Path(tempfile.mkdtemp(prefix="kvmesh-ttft-")),
                           receiver.endpoint)
    url = f"http://127.0.0.1:{mesh_args.port}"
    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "river", "stone", "cloud", "paper", "green"]
    ttfts: dict[str, float] = {}
    try:
        model = served_model(url, key)
        for i in range(args.requests + 3):
            prompt = f"{i} " + " ".join(rng.choice(words) for _ in range(args.prompt_words))
            _, ttft, rid = stream_once(url, key, model, prompt)
            if i >= 3:  # the first requests warm every hop up
                ttfts[rid] = ttft
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(
                s.name == "engine.step" for s in receiver.spans[-50:]):
            time.sleep(0.2)
        time.sleep(6)  # the exporters' batch delay (5 s) for the last spans
    finally:
        stop_mesh(proc)
        receiver.stop()
    hops = waterfall(receiver.spans)
    extra = overheads(receiver.spans, ttfts)
    report = {"ttft_p50_ms": statistics.median(ttfts.values()), "requests": len(ttfts),
              "mesh_overhead_p50_ms": statistics.median(extra) if extra else None, "hops": hops}
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        Path(args.out, "ttft_waterfall.json").write_text(json.dumps(report, indent=1))
    print(f"client TTFT P50 {report['ttft_p50_ms']:.2f} ms over {len(ttfts)} requests; mesh "
          f"overhead (TTFT - own engine step) P50 {report['mesh_overhead_p50_ms']:.2f} ms "
          f"over {len(extra)}")
    print("| hop | starts (ms after the gateway began) | ends | n |\n|---|---|---|---|")
    for name, (a, b, n) in sorted(hops.items(), key=lambda kv: kv[1][0]):
        print(f"| {name} | {a:.2f} | {b:.2f} | {n} |")


if __name__ == "__main__":
    os.environ.setdefault("OTEL_TRACES_SAMPLER", "always_on")
    main()
