"""The engine's per-sequence host work in a decode step at N sequences.

    python bench/host_step.py --model <HF folder> [--seqs 256] [--steps 200] [--shrink]

N greedy `ignore_eos` requests (20-token prompts) are prefilled, then `--steps` decode steps
are timed with the engine's phases wrapped in timers (µs per step): the Python work that
grows with the batch, `schedule` (the scheduler and block reservations), `prepare` (the
step's inputs), `receive` (tokens written back, grammars advanced) and `emit` (detokenising,
stop checks, `StepOutput`s), whose sum per sequence is `python_us_per_seq`; the model's own
compute, `forward`, `lm_head` and `sampler`; and `rest`, the step less all of these (on a
CPU mostly freeing the step's logits). At 256 SmolLM2 streams the H200's engine process is
bound by this host work (issue 16). `--shrink` serves the folder's tokenizer with a
one-layer, 64-wide model of the same vocabulary (random weights), so that on a CPU the
forward pass does not bury the host's share in noise. `--arrivals` runs a closed loop
instead, as a server's engine sees one: the requests' first lengths are spread over 1..128
tokens and each finished request is replaced at once by a new one (a 200-token prompt, 128
tokens), so most steps mix many decodes with a few prompts; `admit` times `add_request`, and
`steps_by_prompt_tokens` counts the timed steps by the prompt tokens beside their decodes.
`--loop` runs each step as the engine process does (inference/engine_loop.py: the step's
record for the worker, pickled) and each request as it arrives there (unpickled, added):
`loop` is what that adds to a step (`loop_extra`: the record of its outputs, stats and prefill rows;
`pickle`: the frame's body) and `commands` what the requests cost, `admit` included.
`--detail` also times the step's helpers (`instrument_detail`), reported beside the phases.
Run each configuration in its own process; alternate trees to compare. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import pickle
import random
import shutil
import sys
import tempfile
from collections import Counter
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.phase_timers import TIMED, wrap_all

PYTHON = ("schedule", "prepare", "receive", "emit", "admit")
MODEL = ("forward", "lm_head", "sampler")
SHRUNK = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
          "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32}


DETAIL = ("commit", "fork", "inflight_launch", "launch_all", "sample_all", "wait")


def instrument_detail() -> None:
    """`--detail`: the step's helpers besides the phases, each timed whole (nested in the
    phases above or in `rest`; reported, not summed): `launch_all` (`_launch`: prepare, the
    forward and head launches and its bookkeeping), `sample_all` (`_sample`: the sampler and
    its host side), `inflight_launch` (starting the tokens' copy back), `wait` (for them),
    `fork` (the `n > 1` check), `commit` (keying newly full blocks)."""
    import inference.engine.engine as engine_mod
    from inference.engine.inflight import InFlight
    from inference.engine.kv_cache import KVCacheManager

    engine = engine_mod.LLMEngine
    wrap_all(((engine, "_launch", "launch_all"), (engine, "_sample", "sample_all"),
              (engine, "_fork_new_choices", "fork"), (InFlight, "launch", "inflight_launch"),
              (InFlight, "wait", "wait"), (KVCacheManager, "commit_running", "commit")))


def instrument() -> None:
    import inference.engine.engine as engine_mod
    from inference.engine.model import DecoderLM
    from inference.engine.runner import ModelRunner
    from inference.engine.scheduler import Scheduler
    from inference.engine_loop import EngineLoop

    wrap_all((
        (engine_mod.LLMEngine, "step", "step"), (ModelRunner, "forward", "forward"),
        (DecoderLM, "compute_logits", "lm_head"), (engine_mod, "sample", "sampler"),
        (Scheduler, "schedule", "schedule"), (ModelRunner, "prepare", "prepare"),
        (engine_mod.LLMEngine, "_emit", "emit"), (engine_mod.LLMEngine, "_receive", "receive"),
        (engine_mod.LLMEngine, "add_request", "admit"), (EngineLoop, "_step", "loop"),
        (sys.modules[__name__], "_timed_dumps", "pickle"),
        (sys.modules[__name__], "_timed_commands", "commands"),
    ))


def shrunk_folder(model: str) -> str:
    """A copy of `model`'s tokenizer files with a one-layer, 64-wide config."""
    out = tempfile.mkdtemp(prefix="host-step-")
    for name in os.listdir(model):
        if name.startswith("tokenizer") or name == "special_tokens_map.json":
            shutil.copy(os.path.join(model, name), out)
    with open(os.path.join(model, "config.json")) as f:
        cfg = json.load(f)
    cfg.update(SHRUNK)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f)
    return out


class Driver:
    """Steps and admissions straight on the engine, or (`loop`) as its process makes them."""

    def __init__(self, engine: Any, loop: bool, detail: bool = False) -> None:
        from inference.engine_loop import EngineLoop

        self.engine, self.loop = engine, EngineLoop(engine, None, None) if loop else None
        self.detail = detail

    def instrument(self) -> None:
        """Start the timers (once warm-up is over): the phases, and with `--detail` the
        helpers too."""
        instrument()
        if self.detail:
            instrument_detail()

    def step(self) -> list[Any]:
        if self.loop is None:
            return self.engine.step()
        record = self.loop._step()
        _timed_dumps(record)
        return record.outputs

    def add(self, rid: str, ids: list[int], params: Any) -> None:
        if self.loop is None:
            self.engine.add_request(rid, ids, params)
            return
        from inference.engine_pipe import dumps
        from inference.engine_protocol import AddRequest

        body = dumps(AddRequest(rid, ids, params))  # the worker's side: not timed
        _timed_commands(self.loop, body)


def _timed_dumps(record: Any) -> bytes:
    from inference.engine_pipe import dumps

    return dumps(record)


def _timed_commands(loop: Any, body: bytes) -> None:
    loop._add(pickle.loads(body))


def decodes(run: Driver, n: int, steps: int, warmup: int) -> None:
    """`n` requests prefilled, then `steps` decode steps timed."""
    from inference.engine.sampling_params import SamplingParams

    params = SamplingParams(max_tokens=warmup + steps + 8, ignore_eos=True, temperature=0)
    for i in range(n):
        run.add(f"r{i}", [1 + (i * 7 + j * 13) % 4000 for j in range(20)], params)
    for _ in range(warmup):
        run.step()
    run.instrument()
    for _ in range(steps):
        run.step()


def closed_loop(run: Driver, n: int, steps: int, warmup: int) -> None:
    """`n` streams whose first requests are 1..128 tokens long; a finished request is
    replaced at once by one of 128 tokens with a new 200-token prompt; `steps` steps timed
    after `warmup` (`admit` included: requests are added between steps, as the engine
    loop adds them)."""
    from inference.engine.sampling_params import SamplingParams

    rng, ids = random.Random(1), itertools.count()

    def add(max_tokens: int) -> None:  # a prompt of its own: no prefix-cache hits
        run.add(f"r{next(ids)}", [rng.randrange(1, 4000) for _ in range(200)],
                SamplingParams(max_tokens=max_tokens, ignore_eos=True, temperature=0))

    for _ in range(n):
        add(rng.randint(1, 128))
    for k in range(warmup + steps):
        if k == warmup:
            run.instrument()
        for out in run.step():
            if out.usage is not None:
                add(128)
        if k >= warmup:
            MIX[_prompt_tokens_bucket(run.engine.last_batch)] += 1


MIX: Counter[str] = Counter()  # timed steps by the prompt tokens beside their decodes


def _prompt_tokens_bucket(batch: Any) -> str:
    """`0`, `1-512` (a mixed graph holds them, cuda_graphs.py) or `513+` (eager on CUDA)."""
    tokens = sum(batch.num_tokens) - batch.leading_decodes()
    return "0" if tokens == 0 else "1-512" if tokens <= 512 else "513+"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="an HF folder (config and tokenizer)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seqs", type=int, default=256)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--shrink", action="store_true")
    ap.add_argument("--arrivals", action="store_true", help="a closed loop of staggered requests")
    ap.add_argument("--detail", action="store_true", help="also time the step's helpers "
                    "(instrument_detail)")
    ap.add_argument("--loop", action="store_true", help="steps and requests as the engine "
                    "process makes them")
    args = ap.parse_args()
    import torch

    from inference.engine.config import EngineConfig
    from inference.engine.engine import LLMEngine

    torch.set_num_threads(1)  # a worker's engine on a busy host; and steadier timings
    model = shrunk_folder(args.model) if args.shrink else args.model
    n, steps = args.seqs, args.steps
    engine = LLMEngine.from_model(model, EngineConfig(
        load_format="dummy", device=args.device, max_num_seqs=n, max_num_batched_tokens=16384,
        max_model_len=1024, num_kv_blocks=n * (1024 // 16) + 16))
    run = Driver(engine, args.loop, args.detail)
    if args.arrivals:
        closed_loop(run, n, steps, args.warmup)
    else:
        decodes(run, n, steps, args.warmup)
    TIMED.setdefault("admit", 0.0)
    us = {k: v / steps * 1e6 for k, v in TIMED.items()}
    if "loop" in us:
        us["loop_extra"] = us["loop"] - us["step"]
    python = sum(us[k] for k in PYTHON)
    us["rest"] = us["step"] - (python - us["admit"]) - sum(us[k] for k in MODEL)
    print(json.dumps({"seqs": n, "steps": steps, "device": args.device, "shrink": args.shrink,
                      "us_per_step": {k: round(v, 1) for k, v in sorted(us.items())},
                      "python_us_per_seq": round(python / n, 2),
                      **({"steps_by_prompt_tokens": dict(MIX)} if MIX else {})}))


if __name__ == "__main__":
    main()
