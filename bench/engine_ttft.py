"""One request's first token from the engine alone, hot and after the engine sat idle.

    python bench/engine_ttft.py --model <HF folder> [--load-format dummy] [--requests 15]
        [--gaps-ms 0,4,50] [--prompt-words 150] [--out DIR]

Issue 12's 1-stream target is the mesh's TTFT against the engine's, and `gpu_serving.py`
measures the engine's back to back in a hot process. Through the mesh the engine process
sleeps between requests (at one stream, about the mesh's own few milliseconds), and the
twenty-third session's hop marks put its part of the first token 0.4 ms above the engine
alone's TTFT. This bench says how much of that is the engine itself coming back from idle,
and where the first token's time goes inside the engine:

- the engine is built as a worker's engine process builds it (`LLM`, `gc_heap.freeze`) and
  warmed up, then for each gap the process sleeps that long before each of `--requests`
  single requests (a `--prompt-words` prompt, 16 greedy tokens), as a blocked engine
  process does;
- per request, in ms after `add_request` began: the end of the first `step()` call (its
  prompt's step launched), the end of the second (with the overlapped loop the first token
  comes out of it, after the next step was launched), and the first token;
- then, hot, the same with the device synchronised after the first call: when the prompt's
  step itself is done on the device, so `first token - prompt done` is host work after it.

Medians per gap. One process for every gap (they are compared with each other); alternate
trees by running the script in each. Prints one JSON line, written to `engine_ttft.json` under
`--out` too.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.gpu_serving import prompt


def one(llm: Any, words: int, rng: random.Random, rid: str, params: Any, gap_s: float,
        sync_first: bool = False) -> dict[str, float]:
    """One request alone after sleeping `gap_s`: its marks in ms after it was added."""
    import torch

    engine = llm.engine
    ids = llm.tokenizer.encode(prompt(rng, words))
    if gap_s:
        time.sleep(gap_s)
    t0 = time.perf_counter()
    engine.add_request(rid, ids, params)
    marks: list[float] = []
    first = 0.0
    while engine.has_unfinished():
        outs = engine.step()
        now = time.perf_counter()
        if not marks and sync_first:  # the prompt's step done on the device (the CPU: at once)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            marks.append(now)
            now = time.perf_counter()
        marks.append(now)
        if not first and any(o.token_ids for o in outs):
            first = now
    ms = [(m - t0) * 1e3 for m in marks]
    if sync_first:
        return {"first_call": ms[0], "prompt_done": ms[1], "ttft": (first - t0) * 1e3}
    return {"first_call": ms[0], "second_call": ms[1], "ttft": (first - t0) * 1e3}


def medians(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in rows), 3) for k in rows[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--load-format", default="auto")
    ap.add_argument("--requests", type=int, default=15)
    ap.add_argument("--gaps-ms", default="0,4,50")
    ap.add_argument("--prompt-words", type=int, default=150)
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    from inference import LLM, SamplingParams
    from kvmesh import gc_heap

    llm = LLM(args.model, load_format=args.load_format, max_num_seqs=256,
              max_num_batched_tokens=16384, max_model_len=4096)
    gc_heap.freeze()  # as the engine process does once loaded (engine_loop.run)
    rng = random.Random(1)
    params = SamplingParams(max_tokens=16, temperature=0, ignore_eos=True)
    llm.generate([prompt(rng, args.prompt_words) for _ in range(32)], params)  # warm-up
    report: dict[str, object] = {"model": args.model, "device": str(llm.engine.runner.device)}
    for gap in [float(g) for g in args.gaps_ms.split(",")]:
        rows = [one(llm, args.prompt_words, rng, f"g{gap:g}-{i}", params, gap / 1e3)
                for i in range(args.requests)]
        report[f"gap_{gap:g}ms"] = medians(rows)
    rows = [one(llm, args.prompt_words, rng, f"sync-{i}", params, 0.0, sync_first=True)
            for i in range(args.requests)]
    report["hot_synced"] = medians(rows)
    line = json.dumps(report)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "engine_ttft.json").write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
