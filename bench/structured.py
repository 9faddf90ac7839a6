"""Constrained vs free decoding throughput: N concurrent JSON-schema-constrained sequences
against the same N unconstrained, plus grammar compile time and cache hits.

    python -m bench.structured --device cuda --seqs 64 --tokens 256 \
        [--model dummy:smollm2-135m --tokenizer tokenizer.json]

Prints one JSON line. On CUDA the target is constrained >= 90 % of free output tok/s.
Throughput is output tokens over wall time. `--model` defaults to the SmolLM2 GGUF; with
`dummy:<preset>` weights, `--tokenizer` (a Hugging Face tokenizer.json, e.g. written by
`--export-tokenizer` on a machine that has the GGUF) supplies the vocabulary the grammar needs:
random weights put mass on many tokens, the grammar's worst case.
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


def build_engine(model: str | None, device: str, tokenizer_json: str | None, seqs: int):
    """The engine of `model`; dummy weights get the tokenizer of `tokenizer_json`."""
    from inference.engine.config import EngineConfig
    from inference.engine.engine import LLMEngine

    config = EngineConfig(device=device, max_num_seqs=max(seqs, 8))
    if model is None or not model.startswith("dummy:"):
        return LLMEngine.from_model(model, config)
    import tokenizers

    from inference.engine.presets import preset_config
    from inference.engine.tokenizer import Tokenizer

    tok = Tokenizer(tokenizers.Tokenizer.from_file(tokenizer_json), chat_template=None,
                    bos_token_id=None, eos_token_ids=[2])
    return LLMEngine(preset_config(model.removeprefix("dummy:")), config, tok,
                     lambda m: m.init_dummy(config.seed))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--tokenizer", default=None, help="tokenizer.json for dummy weights")
    ap.add_argument("--export-tokenizer", default=None, help="write the model's tokenizer.json")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seqs", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=256)
    args = ap.parse_args()
    if args.export_tokenizer:
        from inference.engine.loader import load_checkpoint
        from inference.engine.model_store import resolve_model

        tok = load_checkpoint(resolve_model(args.model)).tokenizer
        with open(args.export_tokenizer, "w", encoding="utf-8") as f:
            f.write(tok.to_json())
        return
    engine = build_engine(args.model, args.device, args.tokenizer, args.seqs)
    tok = engine.tokenizer
    prompt = tok.encode("Describe a person as JSON: ")
    run(engine, prompt, 2, 8, True)  # warm up (and compile the grammar once)
    free = run(engine, prompt, args.seqs, args.tokens, False)
    stats0 = (engine.grammars.stats.compiles, engine.grammars.stats.cache_hits)
    constrained = run(engine, prompt, args.seqs, args.tokens, True)
    schema = dict(SCHEMA, title="fresh")  # a cold compile of a new schema, timed alone
    start = time.perf_counter()
    engine.grammars._compile("json_schema", json.dumps(schema))
    compile_ms = 1000 * (time.perf_counter() - start)
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
