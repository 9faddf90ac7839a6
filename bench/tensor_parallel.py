"""Tensor parallelism on one multi-GPU host, dummy weights, bfloat16, CUDA graphs on.

    python bench/tensor_parallel.py [--out DIR] [--shapes 8b,70b] [--tp 1,2,4] [--skip-throughput]

For each shape (Llama-3.1 8B and 70B) and TP size that fits the host: batch-1 decode ms/token
(prefill taken out, as bench/gpu_engine.py measures it) and throughput on nano-vllm's workload
(256 sequences, input and output lengths uniform in 100..1024, ignore_eos, temperature 0.6).
Each configuration runs in a fresh Python process (`--one SHAPE TP`), so no CUDA context, NCCL
group or allocator cache carries over. Writes `tensor_parallel.json` to --out and prints a
table; the target is TP=2 batch-1 decode <= 0.6x TP=1 (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SHAPES = {"8b": "dummy:llama-3.1-8b", "70b": "dummy:llama-3.1-70b"}
BF16_GIB = {"8b": 16.1, "70b": 141.1}  # weights alone; a rank holds 1/TP of them
TARGET = 0.6


def one(shape: str, tp: int, throughput: bool) -> dict:
    """In this process: one engine, its measurements."""
    from bench.gpu_engine import ours_decode_ms, ours_throughput
    from inference import LLM

    llm = LLM(SHAPES[shape], dtype="bfloat16", max_num_seqs=256, max_num_batched_tokens=16384,
              max_model_len=4096, tensor_parallel_size=tp)
    out = {"shape": shape, "tp": tp, "b1_ms_per_token": ours_decode_ms(llm, 1),
           "kv_blocks": llm.engine.kv.num_blocks}
    if throughput:
        out["throughput"] = ours_throughput(llm, None)
    llm.close()
    return out


def fits(shape: str, tp: int, gpus: int, gib_per_gpu: float) -> bool:
    return tp <= gpus and BF16_GIB[shape] / tp < 0.8 * gib_per_gpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".")
    ap.add_argument("--shapes", default="8b,70b")
    ap.add_argument("--tp", default="1,2,4")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--one", nargs=2, metavar=("SHAPE", "TP"))
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one(args.one[0], int(args.one[1]),
                                         not args.skip_throughput)), flush=True)
        return
    import torch

    gpus = torch.cuda.device_count()
    gib = torch.cuda.get_device_properties(0).total_memory / 2**30 if gpus else 0.0
    results = []
    for shape in args.shapes.split(","):
        for tp in (int(t) for t in args.tp.split(",")):
            if not fits(shape, tp, gpus, gib):
                results.append({"shape": shape, "tp": tp, "skipped": "does not fit this host"})
                continue
            cmd = [sys.executable, __file__, "--one", shape, str(tp)]
            cmd += ["--skip-throughput"] if args.skip_throughput else []
            run = subprocess.run(cmd, capture_output=True, text=True)
            lines = [ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")]
            results.append(json.loads(lines[-1][7:]) if lines else
                           {"shape": shape, "tp": tp, "error": run.stderr[-2000:]})
            print(json.dumps(results[-1]), flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "tensor_parallel.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(table(results))


def table(results: list[dict]) -> str:
    base = {r["shape"]: r["b1_ms_per_token"] for r in results
            if r["tp"] == 1 and "b1_ms_per_token" in r}
    rows = ["| shape | TP | b1 decode ms/token | vs TP=1 | out tok/s (workload) |",
            "|---|---|---|---|---|"]
    for r in results:
        if "b1_ms_per_token" not in r:
            rows.append(f"| {r['shape']} | {r['tp']} | {r.get('skipped', 'error')} | | |")
            continue
        ratio = r["b1_ms_per_token"] / base[r["shape"]] if r["shape"] in base else None
        mark = "" if ratio is None or r["tp"] != 2 else (" ok" if ratio <= TARGET else " MISS")
        tput = r.get("throughput", {}).get("out_tok_per_s")
        rows.append(f"| {r['shape']} | {r['tp']} | {r['b1_ms_per_token']:.2f} | "
                    f"{'' if ratio is None else f'{ratio:.2f}x{mark}'} | "
                    f"{'' if tput is None else f'{tput:.0f}'} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
