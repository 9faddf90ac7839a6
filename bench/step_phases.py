"""Where the engine's host time goes in a constrained step and in a free one.

    python bench/step_phases.py --model <HF folder> --load-format dummy [--device cuda]

`bench.structured`'s workload (64 sequences, its JSON schema, temperature 1, seeded), run
constrained and then free with the constrained run's lengths, with the engine's methods
wrapped in timers: per step, the host milliseconds inside each phase (`launch` of the forward,
`wait_tokens` for the last step's tokens, grammar `advance`, `fill_start`, `masks_wait`, the
`sampler`, ...). Phases nest (`receive` holds `wait_tokens`, `advance` and `fill_start`;
`emit` builds the outputs after it; `sample_all` holds `masks_wait` and `sampler`). When
`wait_tokens` is most of a step, the GPU bounds it; when it is near zero, the host does.
Prints one line per run.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.phase_timers import TIMED, wrap_all


def instrument() -> None:
    import inference.engine.engine as engine_mod
    from inference.engine.grammar_fill import MaskFill
    from inference.engine.inflight import InFlight
    from inference.engine.scheduler import Scheduler

    wrap_all((
        (engine_mod.LLMEngine, "step", "step"), (engine_mod.LLMEngine, "_launch", "launch"),
        (engine_mod.LLMEngine, "_receive", "receive"), (engine_mod.LLMEngine, "_emit", "emit"),
        (engine_mod.LLMEngine, "_sample", "sample_all"), (InFlight, "wait", "wait_tokens"),
        (MaskFill, "advance", "advance"), (MaskFill, "start", "fill_start"),
        (MaskFill, "masks", "masks_wait"), (engine_mod, "sample", "sampler"),
        (Scheduler, "schedule", "schedule"),
    ))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--load-format", default="auto")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seqs", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=256)
    args = ap.parse_args()
    from bench.structured import build_engine, run

    instrument()
    engine = build_engine(args.model, args.device, None, args.seqs, args.load_format)
    engine.grammars.warm()
    prompt = engine.tokenizer.encode("Describe a person as JSON: ")
    run(engine, prompt, 2, 8, True)
    run(engine, prompt, args.seqs, args.tokens, True)  # the schema's states, met once
    lengths: list[int] = []
    for constrained in (True, False):
        TIMED.clear()
        r = run(engine, prompt, args.seqs, args.tokens if constrained else lengths, constrained,
                seed=args.seqs)
        lengths = r["lengths"]
        per_step = {k: round(v / r["steps"] * 1e3, 3) for k, v in sorted(TIMED.items())}
        print("constrained" if constrained else "free", r["steps"], "steps",
              r["step_ms"], "ms/step", per_step, flush=True)


if __name__ == "__main__":
    main()
