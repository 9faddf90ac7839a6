"""What presence, frequency and repetition penalties cost: N concurrent sequences of T tokens
(`ignore_eos`, temperature 1, seeded) with no penalty, with OpenAI's two, and with all three,
each mode in a fresh process (the way a worker runs), alternated over `--rounds`.

    python -m bench.penalty_cost --device cuda --seqs 256 --tokens 256 --rounds 2 \
        [--model dummy:smollm2-135m] [--model <HF folder> --load-format dummy]

Prints one JSON line per run, then a table: output tok/s per mode and its ratio to the
unpenalised runs of the same call. Every sequence is penalised in the penalised modes, the
penalties' worst case (their counts are gathered and written for every row, every step).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

MODES = {
    "none": {},
    "openai": {"presence_penalty": 0.5, "frequency_penalty": 0.5},
    "all": {"presence_penalty": 0.5, "frequency_penalty": 0.5, "repetition_penalty": 1.2},
}


def one(args: argparse.Namespace) -> dict:
    """This process: load, warm up, then time `args.mode` once."""
    from inference import LLM, SamplingParams

    opts = {"device": args.device, "max_num_seqs": max(args.seqs, 8)}
    if args.load_format:
        opts["load_format"] = args.load_format
    llm = LLM(args.model, **opts)
    prompts = [[(7 * i + j) % 1000 + 10 for j in range(64)] for i in range(args.seqs)]

    def params(tokens: int) -> list[SamplingParams]:
        return [SamplingParams(max_tokens=tokens, temperature=1.0, seed=i, ignore_eos=True,
                               **MODES[args.mode]) for i in range(args.seqs)]

    llm.generate(prompts[:8], params(8)[:8])  # warm-up: graphs, kernels, the first slots
    started = time.perf_counter()
    outs = llm.generate(prompts, params(args.tokens))
    took = time.perf_counter() - started
    tokens = sum(len(c.token_ids) for o in outs for c in o.outputs)
    return {"mode": args.mode, "seqs": args.seqs, "tokens": tokens, "seconds": round(took, 3),
            "out_tok_s": round(tokens / took, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", default="dummy:smollm2-135m")
    ap.add_argument("--load-format", default="")
    ap.add_argument("--seqs", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--mode", choices=list(MODES), help="run this mode here (a child)")
    args = ap.parse_args(argv)
    if args.mode:
        print(json.dumps(one(args)), flush=True)
        return 0
    results: dict[str, list[float]] = {m: [] for m in MODES}
    base = [a for a in (argv if argv is not None else sys.argv[1:])]
    for _ in range(args.rounds):
        for mode in MODES:
            out = subprocess.run([sys.executable, "-m", "bench.penalty_cost", *base,
                                  "--mode", mode], capture_output=True, text=True, check=True)
            line = out.stdout.strip().splitlines()[-1]
            print(line, flush=True)
            results[mode].append(json.loads(line)["out_tok_s"])
    plain = sum(results["none"]) / len(results["none"])
    print("\n| mode | out tok/s (each run) | mean vs none |\n|---|---|---|")
    for mode, runs in results.items():
        mean = sum(runs) / len(runs)
        print(f"| {mode} | {', '.join(f'{r:,.0f}' for r in runs)} | {mean / plain:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
