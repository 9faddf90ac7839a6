"""Drive an `LLMEngine` the way the worker does, with requests arriving mid-flight."""

from __future__ import annotations

import random

from inference.engine.config import EngineConfig
from inference.engine.engine import LLMEngine
from inference.engine.presets import preset_config
from inference.engine.sampling_params import SamplingParams


def tiny_engine(**overrides) -> LLMEngine:
    """The tiny preset, random weights, on the CPU in float32 unless `overrides` say
    otherwise: these tests compare tokens and logits exactly (batched against alone, chunked
    against whole, against transformers' float32 twin), which bfloat16 does not promise."""
    cfg = EngineConfig(**{"block_size": 4, "num_kv_blocks": 256, "device": "cpu",
                          "dtype": "float32", **overrides})
    return LLMEngine(preset_config("tiny"), cfg, None, lambda m: m.init_dummy(seed=11))


def run(
    engine: LLMEngine,
    requests: list[tuple[int, list[int], SamplingParams]],
    check=None,
    watch=None,
) -> dict[str, dict[int, list[int]]]:
    """`requests`: (step at which it arrives, prompt ids, params). Returns the token ids of
    every choice by request id ("r0", "r1", ...). `check(engine)` runs after every step, and
    `watch(engine, outputs)` with the step's outputs."""
    tokens: dict[str, dict[int, list[int]]] = {f"r{i}": {} for i in range(len(requests))}
    step = 0
    pending = sorted(enumerate(requests), key=lambda x: x[1][0])
    while pending or engine.has_unfinished():
        while pending and pending[0][1][0] <= step:
            i, (_, prompt, params) = pending.pop(0)
            engine.add_request(f"r{i}", prompt, params)
        outs = engine.step()
        for out in outs:
            tokens[out.request_id].setdefault(out.index, []).extend(out.token_ids)
        if check is not None:
            check(engine)
        if watch is not None:
            watch(engine, outs)
        step += 1
    return tokens


def greedy(max_tokens: int = 12, **kw) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True, **kw)


def arrivals(seed: int, n: int) -> list[tuple[int, list[int]]]:
    """`n` (arrival step, prompt) pairs; every other prompt starts with the same 20 tokens, so
    they share prefix-cache blocks."""
    rng = random.Random(seed)
    shared = [rng.randrange(3, 512) for _ in range(20)]
    out = []
    for i in range(n):
        head = shared if i % 2 else []
        prompt = head + [rng.randrange(3, 512) for _ in range(rng.randrange(1, 30))]
        out.append((rng.randrange(0, 10), prompt))
    return out


def drain(engine: LLMEngine, requests: dict[str, tuple[list[int], SamplingParams]]
          ) -> tuple[dict[str, str], dict[str, list[int]], dict[str, str]]:
    """Add every request at once and step until all end: each one's text, tokens and finish
    reason."""
    for rid, (ids, params) in requests.items():
        engine.add_request(rid, ids, params)
    texts: dict[str, str] = dict.fromkeys(requests, "")
    tokens: dict[str, list[int]] = {rid: [] for rid in requests}
    reasons: dict[str, str] = {}
    while engine.has_unfinished():
        for out in engine.step():
            texts[out.request_id] += out.text
            tokens[out.request_id] += out.token_ids
            if out.finish_reason:
                reasons[out.request_id] = out.finish_reason
    return texts, tokens, reasons
