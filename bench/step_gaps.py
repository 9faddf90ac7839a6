"""Where the GPU waits during the nano-vllm workload: between steps, or inside them.

    python bench/step_gaps.py [--preset llama-3.1-8b] [--window 300] [--steps 5]
                              [--skip-events | --skip-window]

One fresh process, the engine as `bench/workload_profile.py` builds it (bf16, `max_num_seqs=256`,
`max_num_batched_tokens=16384`, `max_model_len=4096`), the workload of
`bench.gpu_engine.throughput_workload`. Two passes:

1. Unprofiled, with two CUDA events a step: one queued just before the step's inputs are
   copied (`ModelRunner.execute`), one just after its sampling (`InFlight.launch`). The GPU
   reaches an event when all work before it is done, so `start(N+1) - end(N)` is the time the
   GPU sat idle between step N's sampling and step N+1's first copy: the host was late. Summed
   by step kind, beside each kind's time from step start to sampling end.
2. A profiled window of `--steps` steps from step `--window`: from the trace, the GPU's busy
   time (union of kernels and copies) against the window's span, kernel time by family
   (`workload_profile.family`) and the top kernels, and the idle gaps by size, each with the
   kernels either side and whether the host had launched the next one before the gap began
   (device-side latency) or after (the host was late).

The profiler slows the host, so pass 2 over-states host-made gaps; pass 1 does not.
Prints one JSON line and a short table last.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.workload_profile import family, step_kind


def event_pass(llm) -> dict:
    """Pass 1: wall time, GPU idle between steps and step spans, by step kind."""
    import inference.engine.inflight as inflight_mod
    from bench.gpu_engine import submit_workload, sync_time

    submit_workload(llm)
    eng = llm.engine
    marks: list[tuple[str, torch.cuda.Event, str]] = []  # ("start" | "end", event, kind)
    execute = eng.runner.execute
    launch_attr = inflight_mod.InFlight.__dict__["launch"]  # the classmethod, restored below
    launch = inflight_mod.InFlight.launch
    kind = ["?"]

    def timed_execute(batch, *a, **k):
        kind[0] = step_kind(batch)
        ev = torch.cuda.Event(enable_timing=True)
        ev.record()
        marks.append(("start", ev, kind[0]))
        return execute(batch, *a, **k)

    def timed_launch(seqs, sample):
        out = launch(seqs, sample)
        ev = torch.cuda.Event(enable_timing=True)
        ev.record()
        marks.append(("end", ev, kind[0]))
        return out

    eng.runner.execute = timed_execute
    inflight_mod.InFlight.launch = staticmethod(timed_launch)
    out_tokens = 0
    t0 = sync_time()
    try:
        while eng.has_unfinished():
            out_tokens += sum(len(o.token_ids) for o in eng.step())
    finally:
        del eng.runner.execute
        inflight_mod.InFlight.launch = launch_attr
    elapsed = sync_time() - t0
    idle: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    span: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    last_end = None
    start = None
    for what, ev, k in marks:
        if what == "start":
            if last_end is not None:
                gap = last_end.elapsed_time(ev)
                idle[k][0] += max(0.0, gap)
                idle[k][1] += 1
            start = (ev, k)
        elif start is not None:
            span[start[1]][0] += start[0].elapsed_time(ev)
            span[start[1]][1] += 1
            last_end, start = ev, None
    kinds = sorted(set(idle) | set(span))
    return {
        "out_tok_per_s": out_tokens / elapsed, "seconds": elapsed,
        "idle_before_ms": {k: round(idle[k][0], 1) for k in kinds},
        "span_ms": {k: round(span[k][0], 1) for k in kinds},
        "steps": {k: span[k][1] for k in kinds},
        "idle_total_ms": round(sum(v[0] for v in idle.values()), 1),
    }


def trace_gaps(trace_path: str) -> dict:
    """Busy time, span and idle gaps of the GPU in a chrome trace of the profiler."""
    with open(trace_path) as f:
        events = json.load(f)["traceEvents"]
    gpu = sorted((e for e in events if e.get("ph") == "X"
                  and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")),
                 key=lambda e: e["ts"])
    launches = {e["args"]["correlation"]: e for e in events
                if e.get("ph") == "X" and e.get("cat") == "cuda_runtime"
                and "correlation" in e.get("args", {})}
    if not gpu:
        return {}
    busy = 0.0
    gaps = []
    end = gpu[0]["ts"]
    prev = gpu[0]
    for e in gpu:
        if e["ts"] > end:
            gaps.append((e["ts"] - end, prev, e))
        busy += max(0.0, e["ts"] + e["dur"] - max(e["ts"], end))
        if e["ts"] + e["dur"] > end:
            end, prev = e["ts"] + e["dur"], e
    span = end - gpu[0]["ts"]
    buckets = {"<2us": 0.0, "2-10us": 0.0, "10-100us": 0.0, ">=100us": 0.0}
    late = 0.0
    for us, before, after in gaps:
        key = ("<2us" if us < 2 else "2-10us" if us < 10 else "10-100us" if us < 100
               else ">=100us")
        buckets[key] += us
        api = launches.get(after.get("args", {}).get("correlation"))
        if api is not None and api["ts"] > before["ts"] + before["dur"]:
            late += us
    top = []
    for us, before, after in sorted(gaps, key=lambda g: -g[0])[:12]:
        api = launches.get(after.get("args", {}).get("correlation"))
        host_late = None if api is None else round(api["ts"] - (before["ts"] + before["dur"]), 1)
        top.append({"us": round(us, 1), "before": before["name"][:60],
                    "after": after["name"][:60], "launch": api["name"] if api else None,
                    "host_late_us": host_late})
    fams: dict[str, float] = defaultdict(float)
    names: dict[str, float] = defaultdict(float)
    for e in gpu:
        fams[family(e["name"]) if e["cat"] == "kernel" else e["cat"]] += e["dur"] / 1e3
        names[e["name"][:80]] += e["dur"] / 1e3
    return {"span_ms": span / 1e3, "busy_ms": busy / 1e3, "busy": busy / span,
            "families_ms": {k: round(v, 2)
                            for k, v in sorted(fams.items(), key=lambda kv: -kv[1])},
            "top_kernels_ms": sorted(((round(v, 2), k) for k, v in names.items()),
                                     reverse=True)[:10],
            "gaps_ms": {k: round(v / 1e3, 3) for k, v in buckets.items()},
            "host_late_gaps_ms": round(late / 1e3, 3), "top_gaps": top}


def profiled_window(llm, at: int, steps: int) -> dict:
    """Pass 2: the trace of `steps` steps from step `at`, and its gaps."""
    from torch.profiler import ProfilerActivity, profile

    from bench.gpu_engine import submit_workload, sync_time

    submit_workload(llm)
    eng = llm.engine
    step = 0
    while eng.has_unfinished() and step < at:
        eng.step()
        step += 1
    sync_time()
    seqs = []
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            eng.step()
            seqs.append(len(eng.last_batch.seqs))
        sync_time()
    wall = time.perf_counter() - t0
    path = os.path.join(tempfile.gettempdir(), f"step_gaps_{at}.json")  # tens of MB
    prof.export_chrome_trace(path)
    while eng.has_unfinished():  # leave the engine empty
        eng.step()
    return {"at_step": at, "seqs": seqs, "wall_ms_per_step": wall / steps * 1e3,
            **trace_gaps(path)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="llama-3.1-8b")
    ap.add_argument("--window", type=int, default=300)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--skip-events", action="store_true", help="only the profiled window")
    ap.add_argument("--skip-window", action="store_true", help="only the unprofiled pass")
    args = ap.parse_args()
    from inference import LLM

    llm = LLM(f"dummy:{args.preset}", dtype="bfloat16", max_num_seqs=256,
              max_num_batched_tokens=16384, max_model_len=4096)
    events = None if args.skip_events else event_pass(llm)
    window = {} if args.skip_window else profiled_window(llm, args.window, args.steps)
    print(json.dumps({"preset": args.preset, "events": events, "window": window}), flush=True)
    if events is not None:
        print(f"\n{args.preset}: {events['out_tok_per_s']:,.0f} out tok/s, "
              f"{events['seconds']:.2f} s; GPU idle between steps {events['idle_total_ms']:.0f} ms")
        for k in events["steps"]:
            print(f"  {k:14s} {events['steps'][k]:5d} steps: span {events['span_ms'][k]:8.1f} "
                  f"ms, idle before {events['idle_before_ms'].get(k, 0):7.1f} ms")
    if window.get("span_ms"):
        print(f"  window @{window['at_step']} ({window['seqs'][0]} seqs): busy "
              f"{window['busy']:.1%} of {window['span_ms']:.2f} ms; gaps {window['gaps_ms']}; "
              f"host-late {window['host_late_gaps_ms']} ms")
        print(f"  kernels (ms over the window): {window['families_ms']}")
        for ms, name in window["top_kernels_ms"][:6]:
            print(f"    {ms:8.2f} ms  {name}")
        for g in window["top_gaps"][:6]:
            print(f"    {g['us']:7.1f} us  {g['before'][:35]:35s} -> {g['after'][:35]:35s} "
                  f"host late {g['host_late_us']}")


if __name__ == "__main__":
    main()
