"""Constrained vs free decoding throughput: N concurrent JSON-schema-constrained sequences
against the same N unconstrained, plus grammar compile time and cache hits.

    python -m bench.structured --device cuda --seqs 64 --tokens 256 \
        [--model dummy:smollm2-135m --tokenizer tokenizer.json]
        [--model <HF folder> --load-format dummy]

Prints one JSON line. On CUDA the target is constrained >= 90 % of free output tok/s.
Throughput is output tokens over wall time. Constrained sequences end when their JSON does, so
the batch thins out; the free run they are compared with (`free_same_lengths`) gives each
sequence exactly the length its constrained twin produced (`ignore_eos`), so both runs do the
same work and differ only by the grammar. The schema is run twice: `constrained_first` pays
for the grammar states it meets for the first time, `constrained` is the schema in steady use;
the 256-token free run of earlier versions is kept as `free_256`.

`--model` defaults to the SmolLM2 GGUF; with `dummy:<preset>` weights, `--tokenizer` (a Hugging
Face tokenizer.json, e.g. written by `--export-tokenizer` on a machine that has the GGUF)
supplies the vocabulary the grammar needs: random weights put mass on many tokens, the
grammar's worst case.
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


def run(engine, prompt: list[int], seqs: int, tokens: int | list[int], constrained: bool,
        seed: int = 0) -> dict:
    """`seqs` sequences at once; `tokens` is each one's `max_tokens`, or per sequence an exact
    length (`ignore_eos`: a free twin of a constrained run). Returns throughput, steps, the
    host time of the grammar masks per step and each sequence's output length."""
    from inference.engine.sampling_params import SamplingParams

    kw = {"grammar_kind": "json_schema", "grammar": json.dumps(SCHEMA)} if constrained else {}
    lengths = tokens if isinstance(tokens, list) else None
    for i in range(seqs):
        exact = {"max_tokens": lengths[i], "ignore_eos": True} if lengths else {
            "max_tokens": tokens}
        engine.add_request(f"{constrained}-{seed}-{i}", prompt, SamplingParams(
            temperature=1.0, seed=seed + i, **exact, **kw))
    out = dict.fromkeys(range(seqs), 0)
    steps = 0
    mask0 = engine.grammars.stats.mask_seconds
    wait0 = engine.grammars.stats.mask_wait_seconds
    start = time.perf_counter()
    while engine.has_unfinished():
        for o in engine.step():
            out[int(o.request_id.rsplit("-", 1)[1])] += len(o.token_ids)
        steps += 1
    wall = time.perf_counter() - start
    tokens_out = sum(out.values())
    return {"tokens": tokens_out, "seconds": round(wall, 3),
            "tok_s": round(tokens_out / wall, 1), "steps": steps,
            "step_ms": round(1000 * wall / steps, 2),
            "mask_ms_per_step": round(1000 * (engine.grammars.stats.mask_seconds - mask0)
                                      / steps, 3),
            "mask_wait_ms_per_step": round(
                1000 * (engine.grammars.stats.mask_wait_seconds - wait0) / steps, 3),
            "lengths": [out[i] for i in range(seqs)]}


def build_engine(model: str | None, device: str, tokenizer_json: str | None, seqs: int,
                 load_format: str = "auto"):
    """The engine of `model`; dummy weights get the tokenizer of `tokenizer_json`, or with
    `load_format="dummy"` an HF folder's own config and tokenizer get random weights."""
    from inference.engine.config import EngineConfig
    from inference.engine.engine import LLMEngine

    config = EngineConfig(device=device, max_num_seqs=max(seqs, 8), load_format=load_format)
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
    ap.add_argument("--load-format", default="auto", help="dummy: an HF folder, random weights")
    ap.add_argument("--export-tokenizer", default=None, help="write the model's tokenizer.json")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seqs", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--grammar-lanes", default="",
                    help="also time the constrained run with these numbers of grammar lanes")
    args = ap.parse_args()
    if args.export_tokenizer:
        from inference.engine.loader import load_checkpoint
        from inference.engine.model_store import resolve_model

        tok = load_checkpoint(resolve_model(args.model)).tokenizer
        with open(args.export_tokenizer, "w", encoding="utf-8") as f:
            f.write(tok.to_json())
        return
    engine = build_engine(args.model, args.device, args.tokenizer, args.seqs, args.load_format)
    tok = engine.tokenizer
    prompt = tok.encode("Describe a person as JSON: ")
    engine.grammars.warm()  # as a served engine does at start-up (engine_loop.py)
    run(engine, prompt, 2, 8, True)  # warm up (and compile the grammar once)
    stats0 = (engine.grammars.stats.compiles, engine.grammars.stats.cache_hits)
    first = run(engine, prompt, args.seqs, args.tokens, True)  # the schema's states are new
    again = run(engine, prompt, args.seqs, args.tokens, True, seed=args.seqs)
    twin = run(engine, prompt, args.seqs, again["lengths"], False, seed=args.seqs)
    free = run(engine, prompt, args.seqs, args.tokens, False)
    lanes = {}
    default_lanes = engine.grammars.lanes
    for n in [int(x) for x in args.grammar_lanes.split(",") if x]:
        from inference.engine.grammar import Grammars
        from inference.engine.grammar_fill import MaskFill

        engine.grammars = Grammars(tok, engine.grammars.vocab_size, engine.eos_ids, lanes=n)
        engine.fill = MaskFill(engine.grammars, pinned=engine.device.type == "cuda")
        engine.grammars.warm()
        run(engine, prompt, args.seqs, args.tokens, True, seed=args.seqs)  # lanes' own states
        r = run(engine, prompt, args.seqs, args.tokens, True, seed=args.seqs)
        lanes[n] = {k: r[k] for k in ("tok_s", "step_ms", "mask_ms_per_step",
                                      "mask_wait_ms_per_step")}
    schema = dict(SCHEMA, title="fresh")  # a cold compile of a new schema, timed alone
    start = time.perf_counter()
    engine.grammars._compile("json_schema", json.dumps(schema))
    compile_ms = 1000 * (time.perf_counter() - start)
    for r in (first, again, twin, free):
        del r["lengths"]
    print(json.dumps({
        "device": str(engine.device), "seqs": args.seqs, "max_tokens": args.tokens,
        "constrained_first": first, "constrained": again, "free_same_lengths": twin,
        "free_256": free,
        "ratio": round(again["tok_s"] / twin["tok_s"], 3),
        "ratio_first": round(first["tok_s"] / twin["tok_s"], 3),
        "compile_ms": round(compile_ms, 2),
        "compiles_in_run": engine.grammars.stats.compiles - stats0[0],
        "cache_hits_in_run": engine.grammars.stats.cache_hits - stats0[1],
        "lanes": default_lanes, "by_lanes": lanes,
    }))

if __name__ == "__main__":
    main()
