"""The engine on one GPU against transformers `generate`, in the same run, on dummy weights.

    python bench/gpu_engine.py [--out DIR] [--skip-hf] [--only smol|8b]

1. SmolLM2-135M shapes: batch-1 decode ms/token, ours (CUDA graphs, and eager) vs transformers
   with a static cache.
2. Llama-3.1-8B shapes, bf16: batch-1 and batch-64 decode (graphs vs eager); offline throughput
   on 256 sequences with input and output lengths uniform in 100..1024, ignore_eos,
   temperature 0.6 (nano-vllm's workload); transformers at batch 64, 512 in / 128 out as the
   peer; the KV pool's share of GPU memory; a kernel profile of decode steps mid-run.
3. The same 8B decode and throughput with an fp8 KV pool (`kv_cache_dtype="fp8"`), and the
   greedy-token agreement of fp8 vs bf16 KV on SmolLM2-135M shapes (fraction of equal tokens).

Decode ms/token = (time for 1 + N tokens - time for 1 token) / N: prefill is taken out. Every
time is end to end through the engine (scheduler, runner, sampler), after a warm-up. Writes
`gpu_engine.json` (and `profile_8b.txt`) to --out; prints a table last.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from inference import LLM, SamplingParams
from inference.engine.presets import preset_config

RESULTS: dict = {}


def sync_time() -> float:
    torch.cuda.synchronize()
    return time.perf_counter()


def free() -> None:
    gc.collect()
    torch.cuda.empty_cache()


def ours_decode_ms(llm: LLM, batch: int, prompt_len: int = 128, n: int = 256) -> float:
    """Steady decode step (ms) at `batch` sequences: `n` engine steps timed once every
    sequence has its first token (prefill out of the window, no sequence ends inside it),
    best of two after a warm-up. With the overlapped loop each step returns the previous
    step's tokens, so n steps still cover n tokens per sequence."""
    eng = llm.engine
    gen = random.Random(batch)
    params = SamplingParams(temperature=0.0, max_tokens=n + 8, ignore_eos=True)
    best = float("inf")
    for attempt in range(3):  # the first is the warm-up
        for i in range(batch):
            prompt = [gen.randrange(1000, 20000) for _ in range(prompt_len)]
            eng.add_request(f"decode-{batch}-{attempt}-{i}", prompt, params)
        started: set[str] = set()
        while len(started) < batch:
            started.update(o.request_id for o in eng.step() if o.token_ids)
        t0 = sync_time()
        for _ in range(n):
            eng.step()
        elapsed = sync_time() - t0
        while eng.has_unfinished():
            eng.step()
        if attempt:
            best = min(best, elapsed / n * 1e3)
    return best


def hf_model(preset: str, dtype=torch.bfloat16):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**preset_config(preset).to_hf())
    torch.manual_seed(0)
    with torch.device("cuda"):
        return LlamaForCausalLM._from_config(cfg, torch_dtype=dtype).eval()


@torch.no_grad()
def hf_decode_ms(hf, prompt_len: int = 128, n: int = 256, static: bool = True) -> float:
    ids = torch.randint(1000, 40000, (1, prompt_len), device="cuda")
    kw = dict(do_sample=False, cache_implementation="static") if static else dict(do_sample=False)

    def run(k):
        t0 = sync_time()
        hf.generate(ids, max_new_tokens=k, min_new_tokens=k, **kw)
        return sync_time() - t0

    run(n + 1)  # warm-up
    return min((run(n + 1) - run(1)) / n * 1e3 for _ in range(2))


@torch.no_grad()
def hf_throughput(hf, batch=64, prompt_len=512, out_len=128) -> float:
    ids = torch.randint(1000, 40000, (batch, prompt_len), device="cuda")
    hf.generate(ids[:, :64], max_new_tokens=8, min_new_tokens=8, do_sample=False)  # warm-up
    t0 = sync_time()
    hf.generate(ids, max_new_tokens=out_len, min_new_tokens=out_len, do_sample=False)
    return batch * out_len / (sync_time() - t0)


def throughput_workload(num=256, lo=100, hi=1024, seed=0):
    gen = random.Random(seed)
    prompts = [[gen.randrange(1000, 100000) for _ in range(gen.randint(lo, hi))]
               for _ in range(num)]
    params = [SamplingParams(temperature=0.6, max_tokens=gen.randint(lo, hi), ignore_eos=True)
              for _ in range(num)]
    return prompts, params


def submit_workload(llm: LLM) -> tuple[list[list[int]], list[SamplingParams]]:
    """Warm the engine up, then add every request of `throughput_workload` to it."""
    prompts, params = throughput_workload()
    llm.generate(prompts[:8], [SamplingParams(max_tokens=16, ignore_eos=True)] * 8)  # warm-up
    for i, (p, sp) in enumerate(zip(prompts, params, strict=True)):
        llm.engine.add_request(f"r{i}", p, sp)
    return prompts, params


def ours_throughput(llm: LLM, out_dir: str | None, profile_name: str = "profile_8b.txt") -> dict:
    prompts, params = submit_workload(llm)
    eng = llm.engine
    out_tokens = steps = 0
    prof_text = None
    split = {"schedule": 0.0, "prepare": 0.0, "execute_launch": 0.0, "sample_launch": 0.0,
             "wait_for_tokens": 0.0}
    restore = _time_step_parts(eng, split)
    t0 = sync_time()
    while eng.has_unfinished():
        if steps == 400 and out_dir is not None:  # a kernel profile of a few mid-run steps
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(10):
                    out_tokens += sum(len(o.token_ids) for o in eng.step())
                    steps += 1
            prof_text = prof.key_averages().table(sort_by="cuda_time_total", row_limit=25)
            continue
        outs = eng.step()
        out_tokens += sum(len(o.token_ids) for o in outs)
        steps += 1
    elapsed = sync_time() - t0
    restore()
    if prof_text and out_dir:
        with open(os.path.join(out_dir, profile_name), "w") as f:
            f.write(prof_text)
    return {
        "seconds": elapsed,
        "output_tokens": out_tokens,
        "expected_output_tokens": sum(p.max_tokens for p in params),
        "input_tokens": sum(len(p) for p in prompts),
        "steps": steps,
        "out_tok_per_s": out_tokens / elapsed,
        "total_tok_per_s": (out_tokens + sum(len(p) for p in prompts)) / elapsed,
        "mean_step_ms": elapsed / steps * 1e3,
        # Host time per step (ms): scheduling, building the inputs, launching the forward and
        # the sampler; "wait_for_tokens" is the host blocked on the GPU (InFlight.wait).
        # "other" = the rest of step(): committing blocks, stop checks, outputs. With the
        # overlapped loop (the default on CUDA) the host's work runs while the GPU computes
        # the step launched before it; with the plain loop it is time the GPU sits idle.
        "host_ms_per_step": {k: v / steps * 1e3 for k, v in split.items()}
        | {"other": (elapsed - sum(split.values())) / steps * 1e3},
    }


def _time_step_parts(eng, acc: dict) -> callable:
    import inference.engine.engine as engine_mod
    from inference.engine.inflight import InFlight

    sched, prep, execute, sample, wait = (eng.scheduler.schedule, eng.runner.prepare,
                                          eng.runner.execute, engine_mod.sample, InFlight.wait)

    def timed(fn, key, minus=None):
        def wrapper(*a, **k):
            t = time.perf_counter()
            before = acc[minus] if minus else 0.0
            out = fn(*a, **k)
            acc[key] += time.perf_counter() - t - ((acc[minus] - before) if minus else 0.0)
            return out
        return wrapper

    eng.scheduler.schedule = timed(sched, "schedule")
    eng.runner.prepare = timed(prep, "prepare")
    eng.runner.execute = timed(execute, "execute_launch", minus="prepare")
    engine_mod.sample = timed(sample, "sample_launch")
    InFlight.wait = timed(wait, "wait_for_tokens")

    def restore():
        del eng.scheduler.schedule, eng.runner.prepare, eng.runner.execute
        engine_mod.sample, InFlight.wait = sample, wait

    return restore


def bench_smol(skip_hf: bool) -> None:
    r = RESULTS.setdefault("smollm2-135m", {})
    if not skip_hf:
        hf = hf_model("smollm2-135m")
        r["hf_static_ms_per_token"] = hf_decode_ms(hf)
        del hf
        free()
    for eager in (False, True):
        t0 = time.perf_counter()
        llm = LLM("dummy:smollm2-135m", dtype="bfloat16", max_num_seqs=64,
                  max_model_len=4096, enforce_eager=eager, gpu_memory_utilization=0.5)
        key = "eager" if eager else "graphs"
        r[f"startup_s_{key}"] = time.perf_counter() - t0
        if not eager:
            r["graph_capture_s"] = llm.engine.graph_decoder.capture_seconds
        r[f"ours_{key}_ms_per_token"] = ours_decode_ms(llm, 1)
        r[f"ours_{key}_b64_ms_per_step"] = ours_decode_ms(llm, 64, n=128)
        del llm
        free()
    print(json.dumps(r, indent=1), flush=True)


def bench_8b(skip_hf: bool, out_dir: str | None) -> None:
    r = RESULTS.setdefault("llama-3.1-8b", {})
    if not skip_hf:
        hf = hf_model("llama-3.1-8b")
        r["hf_b64_512in_128out_tok_per_s"] = hf_throughput(hf)
        del hf
        free()
        print(json.dumps(r, indent=1), flush=True)
    total = torch.cuda.mem_get_info()[1]
    for eager in (False, True):
        t0 = time.perf_counter()
        llm = LLM("dummy:llama-3.1-8b", dtype="bfloat16", max_num_seqs=256,
                  max_num_batched_tokens=16384, max_model_len=4096, enforce_eager=eager)
        key = "eager" if eager else "graphs"
        r[f"startup_s_{key}"] = time.perf_counter() - t0
        r[f"ours_{key}_ms_per_token"] = ours_decode_ms(llm, 1)
        r[f"ours_{key}_b64_ms_per_step"] = ours_decode_ms(llm, 64, n=128)
        if not eager:
            r["graph_capture_s"] = llm.engine.graph_decoder.capture_seconds
            plan = llm.engine.kv_plan
            r["kv_blocks"] = plan.num_blocks
            r["kv_tokens"] = plan.kv_tokens
            r["kv_gib"] = plan.kv_bytes / 2**30
            r["kv_share_of_gpu"] = plan.kv_bytes / total
            r["activation_peak_gib"] = plan.activation_peak_bytes / 2**30
            r["throughput"] = ours_throughput(llm, out_dir)
        print(json.dumps(r, indent=1), flush=True)
        del llm
        free()


def fp8_decode_tiles() -> None:
    """The decode kernel alone at the throughput run's mid-run shape (bench/decode_tiles.py):
    bf16 pool vs fp8 pool; keeps the fastest fp8 tile for the fp8-KV run after it."""
    from bench.decode_tiles import sweep
    from inference.engine.triton_kernels import decode_attention as da

    r = sweep("mid-run", 181, 100, 1800)["dtypes"]
    best = r["fp8"]["best_tile"]
    da.TILES[torch.float8_e4m3fn] = tuple(int(x) for x in best.strip("()").split(","))
    RESULTS["fp8_decode_tiles"] = {"bf16_us": r["bf16"]["current_us"], "best_fp8_tile": best,
                                   "best_fp8_us": r["fp8"]["best_us"]}
    free()


def bench_8b_fp8_kv(out_dir: str | None) -> None:
    """Graphs on, the bf16 run's settings, an fp8 KV pool: decode, pool size, throughput."""
    r = RESULTS.setdefault("llama-3.1-8b", {}).setdefault("fp8_kv", {})
    total = torch.cuda.mem_get_info()[1]
    llm = LLM("dummy:llama-3.1-8b", dtype="bfloat16", max_num_seqs=256,
              max_num_batched_tokens=16384, max_model_len=4096, kv_cache_dtype="fp8")
    r["ours_graphs_ms_per_token"] = ours_decode_ms(llm, 1)
    r["ours_graphs_b64_ms_per_step"] = ours_decode_ms(llm, 64, n=128)
    plan = llm.engine.kv_plan
    r["kv_blocks"] = plan.num_blocks
    r["kv_tokens"] = plan.kv_tokens
    r["kv_gib"] = plan.kv_bytes / 2**30
    r["kv_share_of_gpu"] = plan.kv_bytes / total
    r["throughput"] = ours_throughput(llm, out_dir, "profile_8b_fp8.txt")
    print(json.dumps(r, indent=1), flush=True)
    del llm
    free()


def fp8_kv_agreement(num_prompts: int = 8, max_tokens: int = 64) -> None:
    """Greedy tokens with fp8 vs bf16 KV, SmolLM2-135M shapes, bf16 weights (dummy)."""
    gen = random.Random(7)
    ps = [[gen.randrange(0, 49152) for _ in range(gen.randint(16, 400))]
          for _ in range(num_prompts)]
    greedy = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    toks = {}
    for kv in ("auto", "fp8"):
        llm = LLM("dummy:smollm2-135m", dtype="bfloat16", max_num_seqs=16, max_model_len=1024,
                  num_kv_blocks=2048, kv_cache_dtype=kv, seed=0)
        toks[kv] = [o.outputs[0].token_ids for o in llm.generate(ps, greedy)]
        del llm
        free()
    pairs = list(zip(toks["auto"], toks["fp8"], strict=True))
    same = sum(a == b for x, y in pairs for a, b in zip(x, y, strict=True))
    prefix = [next((i for i, (a, b) in enumerate(zip(x, y, strict=True)) if a != b), len(x))
              for x, y in pairs]
    RESULTS["fp8_kv_agreement"] = {
        "prompts": num_prompts, "tokens_each": max_tokens,
        "token_match_fraction": same / (num_prompts * max_tokens),
        "identical_sequences": sum(p == max_tokens for p in prefix),
        "mean_tokens_before_first_divergence": sum(prefix) / num_prompts,
    }
    print(json.dumps(RESULTS["fp8_kv_agreement"], indent=1), flush=True)


def table() -> str:
    s, b = RESULTS.get("smollm2-135m", {}), RESULTS.get("llama-3.1-8b", {})
    t = b.get("throughput", {})
    q = b.get("fp8_kv", {})
    qt, a = q.get("throughput", {}), RESULTS.get("fp8_kv_agreement", {})
    dt = RESULTS.get("fp8_decode_tiles", {})
    f = lambda v, fmt="{:.2f}": "-" if v is None else fmt.format(v)  # noqa: E731
    hf_tp = b.get("hf_b64_512in_128out_tok_per_s")
    rows = [
        ("SmolLM2-135M b1 decode ms/token (graphs)", f(s.get("ours_graphs_ms_per_token")),
         "≤ 1.25 (800 tok/s)"),
        ("SmolLM2-135M b1 decode ms/token (eager)", f(s.get("ours_eager_ms_per_token")), ""),
        ("SmolLM2-135M transformers static cache ms/token", f(s.get("hf_static_ms_per_token")),
         "8.6 measured before"),
        ("Llama-3.1-8B b1 decode ms/token (graphs)", f(b.get("ours_graphs_ms_per_token")),
         "≤ 6.3"),
        ("Llama-3.1-8B b1 decode ms/token (eager)", f(b.get("ours_eager_ms_per_token")), ""),
        ("Llama-3.1-8B b64 decode ms/step (graphs / eager)",
         f"{f(b.get('ours_graphs_b64_ms_per_step'))} / {f(b.get('ours_eager_b64_ms_per_step'))}",
         ""),
        ("Llama-3.1-8B 256-seq throughput, out tok/s", f(t.get("out_tok_per_s"), "{:.0f}"),
         "≥ 10,000"),
        ("transformers b64 512/128, out tok/s", f(hf_tp, "{:.0f}"), "2,236 measured before"),
        ("ours / transformers", f(t["out_tok_per_s"] / hf_tp) if t and hf_tp else "-", "≥ 4"),
        ("KV pool share of GPU memory", f(b.get("kv_share_of_gpu"), "{:.1%}"), ""),
        ("KV pool tokens / GiB", f"{b.get('kv_tokens', '-')} / {f(b.get('kv_gib'))}", ""),
        ("8B fp8 KV: b1 ms/token / b64 ms/step",
         f"{f(q.get('ours_graphs_ms_per_token'))} / {f(q.get('ours_graphs_b64_ms_per_step'))}",
         ""),
        ("8B fp8 KV: 256-seq throughput, out tok/s", f(qt.get("out_tok_per_s"), "{:.0f}"),
         "≥ 10,000"),
        ("8B fp8 KV: pool tokens / GiB",
         f"{q.get('kv_tokens', '-')} / {f(q.get('kv_gib'))}", ""),
        ("8B decode kernel, 181 seqs, us: bf16 / fp8 best tile",
         f"{f(dt.get('bf16_us'), '{:.0f}')} / {f(dt.get('best_fp8_us'), '{:.0f}')}",
         str(dt.get("best_fp8_tile", ""))),
        ("fp8 vs bf16 KV greedy tokens equal (SmolLM2)",
         f(a.get("token_match_fraction"), "{:.1%}"),
         f"{a.get('identical_sequences', '-')}/{a.get('prompts', '-')} sequences identical"),
        ("graph capture s (smol / 8B)",
         f"{f(s.get('graph_capture_s'))} / {f(b.get('graph_capture_s'))}", ""),
    ]
    w = max(len(r[0]) for r in rows)
    return "\n".join(f"{a:<{w}}  {v:>14}  {tgt}" for a, v, tgt in rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT"))
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--only", choices=["smol", "8b"])
    ap.add_argument("--skip-fp8", action="store_true", help="no fp8-KV rows")
    args = ap.parse_args()
    RESULTS["device"] = torch.cuda.get_device_name()
    RESULTS["torch"] = torch.__version__
    if args.only != "8b":
        bench_smol(args.skip_hf)
    if args.only != "smol":
        bench_8b(args.skip_hf, args.out)
    if not args.skip_fp8:
        fp8_kv_agreement()
        if args.only != "smol":
            fp8_decode_tiles()
            bench_8b_fp8_kv(args.out)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "gpu_engine.json"), "w") as fh:
            json.dump(RESULTS, fh, indent=1)
    print(table())


if __name__ == "__main__":
    main()
