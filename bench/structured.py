"""Constrained vs free decoding throughput: N concurrent JSON-schema-constrained sequences
against the same N unconstrained, plus grammar compile time and cache hits.

    python -m bench.structured --model <spec> --device cuda --seqs 64 --tokens 256
Prints one JSON line. On CUDA the target is constrained >= 90 % of free output tok/s.
Both runs use `ignore_eos`-free sampling, so each sequence's length is the grammar's (or the
model's) choice; throughput is output tokens over wall time.
"""

from __future__ import annotations

import argparse
import json
import time

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer"},
        "email": {"type": "string", "maxLength": 60},
        "roles": {"type": "array", "items": {"enum": ["admin", "user", "guest"]}, "maxItems": 4},
        "address": {"type": "object", "properties": {
            "street": {"type": "string", "maxLength": 60},
            "city": {"type": "string", "maxLength": 40}},
            "required": ["street", "city"], "additionalProperties": False},
    },
    "required": ["name", "age", "email", "roles", "address"],
    "additionalProperties": False,
}


def run(engine, prompt: list[int], seqs: int, tokens: int, constrained: bool) -> dict:
    from inference.engine.sampling_params import SamplingParams

    kw = {"grammar_kind": "json_schema", "grammar": json.dumps(SCHEMA)} if constrained else {}
    for i in range(seqs):
        engine.add_request(f"{constrained}-{i}", prompt, SamplingParams(
            max_tokens=tokens, temperature=1.0, seed=i, **kw))
    out_tokens, steps = 0, 0
    start = time.perf_counter()
    while engine.has_unfinished():
        out_tokens += sum(len(o.token_ids) for o in engine.step())
        steps += 1
    wall = time.perf_counter() - start
    return {"tokens": out_tokens, "seconds": round(wall, 3), "tok_s": round(out_tokens / wall, 1),
            "steps": steps, "step_ms": round(1000 * wall / steps, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seqs", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=256)
    args = ap.parse_args()
    from inference.engine.config import EngineConfig
    from inference.engine.engine import LLMEngine

    engine = LLMEngine.from_model(args.model, EngineConfig(device=args.device,
                                                           max_num_seqs=max(args.seqs, 8)))
    tok = engine.tokenizer
    prompt = tok.encode(tok.apply_chat_template(
        [{"role": "user", "content": "Describe a person as JSON."}]))
    run(engine, prompt, 2, 8, True)  # warm up (and compile the grammar once)
    free = run(engine, prompt, args.seqs, args.tokens, False)
    stats0 = (engine.grammars.stats.compiles, engine.grammars.stats.cache_hits)
    constrained = run(engine, prompt, args.seqs, args.tokens, True)
    from kvmesh.grammar import to_llguidance  # cold compile of a fresh schema, timed alone

    schema = dict(SCHEMA, title="fresh")
    start = time.perf_counter()
    engine.grammars._compile("json_schema", json.dumps(schema))
    compile_ms = 1000 * (time.perf_counter() - start)
    del to_llguidance
    print(json.dumps({
        "device": str(engine.device), "seqs": args.seqs, "max_tokens": args.tokens,
        "free": free, "constrained": constrained,
        "ratio": round(constrained["tok_s"] / free["tok_s"], 3),
        "compile_ms": round(compile_ms, 2),
        "compiles_in_run": engine.grammars.stats.compiles - stats0[0],
        "cache_hits_in_run": engine.grammars.stats.cache_hits - stats0[1],
    }))


if __name__ == "__main__":
    main()
