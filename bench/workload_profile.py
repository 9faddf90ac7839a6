"""Where the nano-vllm workload's time goes, step kind by step kind, kernel by kernel.

    python bench/workload_profile.py [--preset llama-3.1-8b] [--kv-dtype auto|fp8] [--out DIR]

One fresh process, as a worker builds its engine (`LLM("dummy:<preset>")`, bf16,
`max_num_seqs=256`, `max_num_batched_tokens=16384`, `max_model_len=4096`), runs the workload of
`bench.gpu_engine.throughput_workload` (256 sequences, input and output lengths uniform in
100..1024, temperature 0.6, ignore_eos) and reports:
- wall time split by step kind: steps that compute prompt tokens (`prefill`, including mixed
  ones) and decode-only steps, bucketed by batch size; each engine call's wall time is charged
  to the batch it launched (with the overlapped loop a call waits for the previous step, so
  the sum is the run's wall time and the split is close, not exact);
- the kernels of three profiled windows (the first prefill steps, decode at step 300 and at
  step 700): per window, milliseconds per step by kernel family (GEMM, decode attention,
  prefill attention, norm, ...) and the top kernels; full tables go to `workload_profile.txt`;
- the decode-attention bytes per step of the mid-run window (KV read once) over its time.

Prints one JSON line and a short table last. Profiled steps run slower than the others; the
totals come from an unprofiled run of the same workload first.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FAMILIES = (  # first match wins: (family, substrings of the kernel name)
    ("decode_attention", ("_decode_split", "_decode_merge")),
    ("prefill_attention", ("prefill",)),
    ("kv_write", ("reshape_and_cache", "kv_write", "_write_kv")),
    ("norm", ("rms", "norm")),
    ("rope", ("rope", "rotary")),
    ("activation", ("silu", "act_and_mul", "gelu")),
    ("gemm", ("gemm", "gemv", "sm90", "cutlass", "cublas", "splitk", "nvjet")),
    ("sampling", ("softmax", "sort", "topk", "exponential", "argmax", "multinomial",
                  "cumsum")),
)


def family(name: str) -> str:
    low = name.lower()
    for fam, keys in FAMILIES:
        if any(k in low for k in keys):
            return fam
    return "other"


def step_kind(batch) -> str:
    if max(batch.num_tokens) > 1:
        return "prefill"
    n = len(batch.seqs)
    top = 1 << (n - 1).bit_length()
    return f"decode {top // 2 + 1}-{top}" if n > 1 else "decode 1"


def run_split(llm) -> dict:
    """The workload unprofiled: output tok/s and wall time by step kind."""
    from bench.gpu_engine import submit_workload, sync_time

    submit_workload(llm)
    eng = llm.engine
    by_kind: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    out_tokens = 0
    t0 = last = sync_time()
    while eng.has_unfinished():
        out_tokens += sum(len(o.token_ids) for o in eng.step())
        now = time.perf_counter()
        if eng.last_batch:
            acc = by_kind[step_kind(eng.last_batch)]
            acc[0] += now - last
            acc[1] += 1
        last = now
    elapsed = sync_time() - t0
    return {"out_tok_per_s": out_tokens / elapsed, "seconds": elapsed,
            "by_kind": {k: {"seconds": round(v[0], 3), "steps": v[1],
                            "ms_per_step": round(v[0] / v[1] * 1e3, 2)}
                        for k, v in sorted(by_kind.items())}}


def profile_windows(llm, windows: dict[str, int], steps: int, out_dir: str) -> dict:
    """Kernel time per step by family for `steps` steps from each window's start step."""
    from torch.profiler import ProfilerActivity, profile

    from bench.gpu_engine import submit_workload, sync_time

    submit_workload(llm)
    eng = llm.engine
    starts = {v: k for k, v in windows.items()}
    result: dict[str, dict] = {}
    text = []
    step = 0
    while eng.has_unfinished():
        name = starts.get(step)
        if name is None:
            eng.step()
            step += 1
            continue
        batches = []
        sync_time()
        t0 = time.perf_counter()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(steps):
                eng.step()
                batches.append(eng.last_batch)
                step += 1
            sync_time()
        wall = time.perf_counter() - t0
        fams: dict[str, float] = defaultdict(float)
        kernels = []
        for e in prof.key_averages():
            us = e.self_device_time_total
            if us <= 0:
                continue
            fams[family(e.key)] += us / 1e3 / steps
            kernels.append((us / 1e3 / steps, e.count / steps, e.key[:90]))
        kernels.sort(reverse=True)
        real = [b for b in batches if b]
        result[name] = {
            "at_step": windows[name],
            "seqs_per_step": sum(len(b.seqs) for b in real) / max(1, len(real)),
            "tokens_per_step": sum(sum(b.num_tokens) for b in real) / max(1, len(real)),
            "context_tokens": sum(s.num_tokens for s in (real[-1].seqs if real else [])),
            "profiled_wall_ms_per_step": wall / steps * 1e3,
            "kernel_ms_per_step": sum(fams.values()),
            "families_ms": {k: round(v, 3) for k, v in sorted(fams.items(),
                                                               key=lambda kv: -kv[1])},
            "top": [(round(ms, 3), round(n, 1), k) for ms, n, k in kernels[:8]],
        }
        text.append(f"== {name} (from step {windows[name]})\n"
                    + prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=30))
    with open(os.path.join(out_dir, "workload_profile.txt"), "w") as f:
        f.write("\n".join(text))
    return result


def kv_bandwidth(window: dict, kv_bytes_per_token: int) -> float | None:
    ms = window["families_ms"].get("decode_attention")
    if not ms:
        return None
    return window["context_tokens"] * kv_bytes_per_token / (ms / 1e3) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="llama-3.1-8b")
    ap.add_argument("--kv-dtype", default="auto")
    ap.add_argument("--profile-steps", type=int, default=10)
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    from inference import LLM

    llm = LLM(f"dummy:{args.preset}", dtype="bfloat16", max_num_seqs=256,
              max_num_batched_tokens=16384, max_model_len=4096, kv_cache_dtype=args.kv_dtype)
    split = run_split(llm)
    windows = profile_windows(llm, {"prefill": 0, "decode@300": 300, "decode@700": 700},
                              args.profile_steps, args.out)
    cfg = llm.engine.model_config
    kv_elem = 1 if args.kv_dtype == "fp8" else 2
    per_token = 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * kv_elem
    for w in windows.values():
        w["decode_attention_gb_s"] = kv_bandwidth(w, per_token)
    print(json.dumps({"preset": args.preset, "kv_dtype": args.kv_dtype, "split": split,
                      "windows": windows}), flush=True)
    print(f"\n{args.preset} kv={args.kv_dtype}: {split['out_tok_per_s']:,.0f} out tok/s, "
          f"{split['seconds']:.2f} s")
    for kind, v in split["by_kind"].items():
        print(f"  {kind:14s} {v['steps']:5d} steps {v['seconds']:7.2f} s "
              f"{v['ms_per_step']:7.2f} ms/step")
    for name, w in windows.items():
        fams = ", ".join(f"{k} {v:.2f}" for k, v in w["families_ms"].items())
        bw = w["decode_attention_gb_s"]
        print(f"  [{name}] {w['seqs_per_step']:.0f} seqs, {w['tokens_per_step']:.0f} tok/step, "
              f"kernels {w['kernel_ms_per_step']:.2f} ms/step: {fams}"
              + (f"; decode attn {bw:,.0f} GB/s" if bw else ""))


if __name__ == "__main__":
    main()
