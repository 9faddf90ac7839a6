"""CPU decode throughput: our engine vs transformers `generate`, same weights, same run.

Workload (issue 2): SmolLM2-135M-Instruct (the default GGUF), 64-token prompts, 128 new
tokens, ignore_eos; batch 1 and batch 16. Decode rate = tokens after the first / time after
the first token, so prefill is not counted. Each side runs `--repeats` times, interleaved, and
the best run is reported (the machine is shared and noisy). Prints a table; `--json` writes
the raw numbers.

    python -m bench.cpu_engine --configs float32 bfloat16 int4

`int4` is our engine with 4-bit weight-only projections (bfloat16 activations); transformers
runs the same GGUF in bfloat16 beside it. `auto` is the engine's default dtype (bfloat16 on a CPU
with native bf16 dot products, float32 on others; placement.pick_dtype), with transformers in
the dtype it picked. For fresh-process numbers, run one configuration per process:

    python -m bench.cpu_engine --configs auto; python -m bench.cpu_engine --configs float32
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time

import torch

from inference import LLM, SamplingParams

PROMPT_LEN, NEW_TOKENS = 64, 128


def _prompts(vocab: int, batch: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(100, vocab - 100, (batch, PROMPT_LEN), generator=gen).tolist()


def ours(llm: LLM, batch: int) -> tuple[float, float]:
    """(seconds to the first token of every sequence, seconds for the rest)."""
    engine = llm.engine
    params = SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0, ignore_eos=True)
    for i, p in enumerate(_prompts(engine.model_config.vocab_size, batch)):
        engine.add_request(f"b{i}", p, params)
    t0 = time.perf_counter()
    first, produced = None, 0
    while engine.has_unfinished():
        produced += sum(len(o.token_ids) for o in engine.step())
        if first is None and produced >= batch:
            first = time.perf_counter()
    assert produced == batch * NEW_TOKENS, produced
    return first - t0, time.perf_counter() - first


def theirs(model, vocab: int, batch: int) -> tuple[float, float]:
    ids = torch.tensor(_prompts(vocab, batch))
    kw = {"do_sample": False, "pad_token_id": 0}
    with torch.inference_mode():
        t0 = time.perf_counter()
        model.generate(ids, max_new_tokens=1, min_new_tokens=1, **kw)
        t1 = time.perf_counter()
        out = model.generate(ids, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, **kw)
        t2 = time.perf_counter()
    assert out.shape[1] == PROMPT_LEN + NEW_TOKENS
    prefill = t1 - t0
    return prefill, (t2 - t1) - prefill


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", nargs="+", default=["float32", "bfloat16", "int4"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from transformers import AutoModelForCausalLM

    from inference.engine.model_store import resolve_model

    path = resolve_model(None)
    rows = []
    for name in args.configs:
        dtype = "bfloat16" if name == "int4" else name
        quant = "int4" if name == "int4" else None
        llm = LLM(str(path), dtype=dtype, quantization=quant, max_num_seqs=64)
        if name == "auto":
            print(f"auto: {llm.engine.dtype} ({llm.engine.dtype_reason})", flush=True)
        hf = AutoModelForCausalLM.from_pretrained(  # in the dtype our engine runs ("auto": picked)
            str(path.parent), gguf_file=path.name, dtype=llm.engine.dtype
        ).eval()
        vocab = llm.engine.model_config.vocab_size
        for batch in args.batches:
            ours(llm, batch)  # warm-up
            best = {"kvmesh": 0.0, "transformers": 0.0}
            for _ in range(args.repeats):
                rate = batch * (NEW_TOKENS - 1)
                best["kvmesh"] = max(best["kvmesh"], rate / ours(llm, batch)[1])
                best["transformers"] = max(best["transformers"], rate / theirs(hf, vocab, batch)[1])
            rows.append(
                {
                    "config": name,
                    "batch": batch,
                    **best,
                    "ratio": best["kvmesh"] / best["transformers"],
                }
            )
            print(rows[-1], flush=True)
    meta = {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
    }
    print(f"\n{'config':9} {'batch':>5} {'kvmesh tok/s':>13} {'transformers':>13} {'ratio':>6}")
    for r in rows:
        print(
            f"{r['config']:9} {r['batch']:5d} {r['kvmesh']:13.1f} {r['transformers']:13.1f} "
            f"{r['ratio']:6.2f}"
        )
    print(meta)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
