"""Where one decode step's GPU time goes: the kernels of the captured decode graph.

    python bench/decode_profile.py [--presets smollm2-135m,llama-3.1-8b] [--batch 1] [--out DIR]

For each preset, in a fresh process (`--child`), as a worker builds its engine
(`LLM("dummy:<preset>")`, bf16, `max_num_seqs=256`, `max_model_len=4096`):
- the decode graph of `--batch` rows replayed 50 times under the profiler, the LM head and
  argmax after it: per kernel, launches per step and microseconds per step;
- the engine's steady decode step (`bench.gpu_engine.ours_decode_ms`, host work included) and
  the same graph replayed back to back without the profiler (the step's GPU floor);
- the bytes the step must read (every weight the step touches once, KV ignored) over that
  time, against a measured read-only bandwidth (a large `sum`), so the gap is in one number.

Prints one table per preset; the full kernel list goes to `decode_profile.txt` under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read_bandwidth_gbs() -> float:
    """Read-only device bandwidth: a sum over 4 GiB of bf16, median of 10."""
    import torch

    x = torch.randn(2 << 30, dtype=torch.bfloat16, device="cuda")
    x.sum()
    times = []
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        x.sum()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) / 1e3)
    del x
    return (4 << 30) / sorted(times)[5] / 1e9


def child(preset: str, batch: int) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from bench.engine_host import decode_graph_step, gpu_floor_ms
    from bench.gpu_engine import ours_decode_ms
    from inference import LLM, SamplingParams

    llm = LLM(f"dummy:{preset}", dtype="bfloat16", max_num_seqs=256,
              max_num_batched_tokens=16384, max_model_len=4096)
    llm.generate([[1000 + i for i in range(64)]],
                 SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True))
    step_ms = ours_decode_ms(llm, batch)  # the engine's own step, host work included
    eng = llm.engine
    graphs = eng.graph_decoder
    bs = next(b for b in graphs.sizes if b >= batch)
    model = eng.runner.model
    graphs.seq_lens[:bs] = 128  # attend over 128 real positions, as a short chat would
    once = decode_graph_step(llm, batch)
    reps = 50
    floor_ms = gpu_floor_ms(llm, batch, reps)
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            once()
        torch.cuda.synchronize()
    kernels = []
    for ev in prof.key_averages():
        if ev.self_device_time_total <= 0:
            continue
        kernels.append({"name": ev.key[:110], "per_step": ev.count / reps,
                        "us_per_step": ev.self_device_time_total / reps})
    kernels.sort(key=lambda k: -k["us_per_step"])
    head = model.lm_head.weight
    weight_bytes = sum(p.numel() * p.element_size() for n, p in model.named_parameters()
                       if not n.startswith("embed_tokens"))  # a decode step reads one row
    if head is model.embed_tokens.weight:  # tied: read in full as the LM head
        weight_bytes += head.numel() * head.element_size()
    return {"preset": preset, "batch": batch, "graph_bs": bs, "step_ms": step_ms,
            "floor_ms": floor_ms,
            "kernel_us": sum(k["us_per_step"] for k in kernels),
            "launches": sum(k["per_step"] for k in kernels),
            "weight_gb": weight_bytes / 1e9, "read_gbs": read_bandwidth_gbs(),
            "kernels": kernels}


def show(r: dict) -> str:
    floor_s = r["floor_ms"] / 1e3
    lines = [
        f"{r['preset']} batch {r['batch']} (graph {r['graph_bs']}): engine step "
        f"{r['step_ms']:.3f} ms, GPU floor {r['floor_ms']:.3f} ms, "
        f"kernels {r['kernel_us']:.0f} us in {r['launches']:.0f} launches; weights "
        f"{r['weight_gb']:.2f} GB -> {r['weight_gb'] / floor_s:.0f} GB/s of "
        f"{r['read_gbs']:.0f} read-only ({r['weight_gb'] / floor_s / r['read_gbs']:.0%}); "
        f"bandwidth floor {r['weight_gb'] / r['read_gbs'] * 1e3:.3f} ms",
        "| us/step | launches/step | kernel |", "|---|---|---|"]
    lines += [f"| {k['us_per_step']:.1f} | {k['per_step']:.0f} | {k['name']} |"
              for k in r["kernels"][:14]]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="smollm2-135m,llama-3.1-8b")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--child", default=None)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.batch)), flush=True)
        return
    report = []
    for preset in args.presets.split(","):
        done = subprocess.run([sys.executable, __file__, "--child", preset,
                               "--batch", str(args.batch)], capture_output=True, text=True)
        line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
            print(f"{preset} failed: {why}\n{done.stderr[-3000:]}", flush=True)
            continue
        r = json.loads(line.removeprefix("RESULT "))
        report.append(r)
        with open(os.path.join(args.out, "decode_profile.txt"), "a") as f:
            f.write(json.dumps(r) + "\n")
    for r in report:
        print(show(r))


if __name__ == "__main__":
    main()
