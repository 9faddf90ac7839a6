"""Engine speed from fresh processes, as a worker gets it: is each step bound by the GPU?

    python bench/engine_host.py [--runs 3] [--presets llama-3.1-8b,smollm2-135m]
        [--modes async,sync,hf-batch,hf-generate] [--out DIR]

Every (run, preset, mode) is its own child process (`--child`), started the way a worker
starts its engine: `LLM("dummy:<preset>")`, bf16, `max_num_seqs=256`,
`max_num_batched_tokens=16384`, `max_model_len=4096`, nothing else run first. Mode `async`
is the overlapped loop (`async_scheduling=True`, the default with CUDA), `sync` the plain
loop. A child measures:
- decode ms/token at batch 1 and 64: `bench.gpu_engine.ours_decode_ms`, steady engine steps
  once every sequence has its first token, best of two, host work included;
- the GPU floor of the same step: the decode graph, the LM head and argmax replayed back to
  back with no host work between them; `gpu busy` = floor / measured step;
- for 8B shapes, nano-vllm's workload (256 sequences, input and output lengths uniform in
  100..1024, temperature 0.6, ignore_eos): output tok/s and mean step of an unprofiled run,
  and GPU busy over 20 mid-run steps (CUDA kernel time from the profiler, in a second pass,
  over the unprofiled run's mean step at the same point); and the
  same prompts with 512 greedy output tokens each, the workload of the transformers peer.

Peers, each in its own process too (8B shapes only): `hf-batch` is transformers'
continuous-batching `generate_batch` (paged attention, CUDA graphs) on those prompts with 512
output tokens each; `hf-generate` its plain `generate` at batch 64, 512 in / 128 out.

Writes one JSON line per child to `engine_host.jsonl` under --out and prints a table last.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PEER_OUT = 512  # output tokens per prompt when ours and transformers run the same prompts


def child(preset: str, mode: str) -> dict:
    from dataclasses import fields

    import torch

    from bench.gpu_engine import ours_decode_ms, sync_time, throughput_workload
    from inference import LLM, SamplingParams
    from inference.engine.config import EngineConfig

    options = {"async_scheduling": mode == "async"}
    if "async_scheduling" not in {f.name for f in fields(EngineConfig)}:  # before the overlap
        assert mode == "sync", "this commit has only the plain loop"
        options = {}
    t0 = time.perf_counter()
    llm = LLM(f"dummy:{preset}", dtype="bfloat16", max_num_seqs=256,
              max_num_batched_tokens=16384, max_model_len=4096, **options)
    r: dict = {"preset": preset, "mode": mode, "startup_s": time.perf_counter() - t0,
               "cpus": sorted(os.sched_getaffinity(0)), "torch": torch.__version__}
    for batch, n in ((1, 256), (64, 128)):
        ms = ours_decode_ms(llm, batch, n=n)
        floor = gpu_floor_ms(llm, batch)
        r[f"b{batch}_ms"] = ms
        r[f"b{batch}_floor_ms"] = floor
        r[f"b{batch}_gpu_busy"] = floor / ms
    if preset.startswith("llama"):
        r["throughput"] = throughput(llm)
        prompts = throughput_workload()[0]
        fixed = SamplingParams(temperature=0.0, max_tokens=PEER_OUT, ignore_eos=True)
        t0 = sync_time()
        done = llm.generate(prompts, fixed)
        r["fixed_out_tok_per_s"] = (sum(len(o.outputs[0].token_ids) for o in done)
                                    / (sync_time() - t0))
    return r


def peer_child(preset: str, mode: str) -> dict:
    """transformers on the same GPU: `generate_batch` (continuous batching, paged attention)
    on the workload's prompts with PEER_OUT greedy tokens each, or plain `generate` at batch
    64, 512 in / 128 out."""
    from transformers import GenerationConfig

    from bench.gpu_engine import hf_model, hf_throughput, sync_time, throughput_workload

    hf = hf_model(preset)
    if mode == "hf-generate":
        return {"preset": preset, "mode": mode, "out_tok_per_s": hf_throughput(hf)}
    prompts = throughput_workload()[0]
    cfg = GenerationConfig(max_new_tokens=PEER_OUT, do_sample=False, eos_token_id=None,
                           pad_token_id=0)
    hf.generate_batch(prompts[:8], generation_config=cfg)  # warm-up (and graph capture)
    t0 = sync_time()
    out = hf.generate_batch(prompts, generation_config=cfg)
    elapsed = sync_time() - t0
    tokens = sum(len(o.generated_tokens) for o in out.values())
    return {"preset": preset, "mode": mode, "out_tok_per_s": tokens / elapsed,
            "output_tokens": tokens}


def decode_graph_step(llm, batch: int):
    """A function that runs one decode step's GPU work for `batch` rows and nothing else:
    the captured graph the engine would replay for the sequences its buffers hold now (the
    smallest size that holds `batch` rows, the shortest span that holds their contexts), the
    LM head and argmax."""
    eng = llm.engine
    graphs = eng.graph_decoder
    model = eng.runner.model
    longest = int(graphs.seq_lens[:batch].max())

    def once():
        return model.compute_logits(graphs.replay_decode(batch, longest)).argmax(dim=-1)

    return once


def gpu_floor_ms(llm, batch: int, reps: int = 50) -> float:
    """One decode step's GPU time: `decode_graph_step`, back to back."""
    import torch

    once = decode_graph_step(llm, batch)
    with torch.inference_mode():
        once()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            once()
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps * 1e3


def throughput(llm) -> dict:
    """The workload timed with nothing else in the process, then a second pass of it
    profiled for 20 steps from step 400 and stopped there. A profiler window inside the
    timed run slowed every later step (seventh session: 6,958 out tok/s with it, 9,732 in
    `workload_profile.py` without it)."""
    from torch.profiler import ProfilerActivity, profile

    from bench.gpu_engine import submit_workload, sync_time

    eng = llm.engine
    submit_workload(llm)
    out_tokens = steps = 0
    t0 = sync_time()
    while eng.has_unfinished():
        if steps == 300:
            w0 = sync_time()
        if steps == 400:
            window_s = sync_time() - w0  # unprofiled steps 300-399, as the profiled ones
        out_tokens += sum(len(o.token_ids) for o in eng.step())
        steps += 1
    elapsed = sync_time() - t0
    submit_workload(llm)
    for _ in range(400):
        eng.step()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(20):
            eng.step()
        sync_time()
    kernel_ms = sum(e.self_device_time_total for e in prof.key_averages()) / 1e3 / 20
    eng.abort_all()
    while eng.has_unfinished():
        eng.step()
    window_step_ms = window_s / 100 * 1e3
    return {"out_tok_per_s": out_tokens / elapsed, "output_tokens": out_tokens,
            "steps": steps, "mean_step_ms": elapsed / steps * 1e3,
            "mid_step_ms": window_step_ms, "mid_kernel_ms": kernel_ms,
            "gpu_busy": kernel_ms / window_step_ms}


def gpu_clocks() -> str:
    try:
        return subprocess.run(
            ["nvidia-smi", "--query-gpu=clocks.sm,clocks.mem,clocks.max.sm,power.draw",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def table(rows: list[dict]) -> str:
    out = ["| preset | mode | runs | b1 ms/token (min/med/max) | b1 GPU floor | b1 busy "
           "| b64 ms/step | b64 busy | nano-vllm out tok/s | busy mid-run | 512-out tok/s |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["preset"], r["mode"]) for r in rows})
    for preset, mode in keys:
        rs = [r for r in rows if (r["preset"], r["mode"]) == (preset, mode)]
        if mode.startswith("hf-"):
            tps = "/".join(f"{r['out_tok_per_s']:,.0f}" for r in rs)
            out.append(f"| {preset} | {mode} | {len(rs)} | | | | | | | | {tps} |")
            continue
        b1 = sorted(r["b1_ms"] for r in rs)
        tp = [r["throughput"] for r in rs if "throughput" in r]
        tps = "/".join(f"{t['out_tok_per_s']:,.0f}" for t in tp) or "-"
        busy = "/".join(f"{t['gpu_busy']:.0%}" for t in tp) or "-"
        fixed = "/".join(f"{r['fixed_out_tok_per_s']:,.0f}" for r in rs
                         if "fixed_out_tok_per_s" in r) or "-"
        out.append(
            f"| {preset} | {mode} | {len(rs)} | {b1[0]:.3f} / {statistics.median(b1):.3f} / "
            f"{b1[-1]:.3f} | {statistics.median(r['b1_floor_ms'] for r in rs):.3f} | "
            f"{statistics.median(r['b1_gpu_busy'] for r in rs):.0%} | "
            f"{statistics.median(r['b64_ms'] for r in rs):.3f} | "
            f"{statistics.median(r['b64_gpu_busy'] for r in rs):.0%} | {tps} | {busy} | "
            f"{fixed} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--presets", default="llama-3.1-8b,smollm2-135m")
    ap.add_argument("--modes", default="async,sync,hf-batch,hf-generate")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--child", nargs=2, metavar=("PRESET", "MODE"))
    args = ap.parse_args()
    if args.child:
        preset, mode = args.child
        run = peer_child if mode.startswith("hf-") else child
        print("RESULT " + json.dumps(run(preset, mode)), flush=True)
        return
    rows: list[dict] = []
    path = os.path.join(args.out, "engine_host.jsonl")
    for run in range(args.runs):
        for preset in args.presets.split(","):
            for mode in args.modes.split(","):
                if mode.startswith("hf-") and (run > 0 or not preset.startswith("llama")):
                    continue  # one peer run per 8B preset is enough for the ratio
                clocks = gpu_clocks()
                done = subprocess.run([sys.executable, __file__, "--child", preset, mode],
                                      capture_output=True, text=True)
                line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")),
                            None)
                if line is None:
                    print(f"run {run} {preset} {mode} failed:\n{done.stderr[-3000:]}",
                          flush=True)
                    continue
                r = json.loads(line.removeprefix("RESULT ")) | {"run": run, "clocks": clocks}
                rows.append(r)
                with open(path, "a") as f:
                    f.write(json.dumps(r) + "\n")
                print(f"run {run} {preset} {mode}: {json.dumps(r)[:400]}", flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()
