"""How long one prompt takes to tokenize, whole or in parallel pieces, hot and after a sleep.

    python bench/tokenize_pieces.py [--tokenizer FILE] [--words 150] [--pieces 1,2,3,4,8]

The router tokenizes every text prompt on the first token's path
(inference/engine/split_encode.py). One prompt of `--words` random words is encoded whole
(`pieces` 1) or cut into n pieces encoded by `tokenizers`' thread pool, back to back (gap 0)
and after sleeping 2 or 50 ms before each (as at one stream, where a request reaches the
router every ~130 ms and the pool's threads have gone to sleep). Medians in microseconds.
Without `--tokenizer`, the default model's (exported from its GGUF).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import tokenizers

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gpu_serving import prompt  # noqa: E402
from inference.engine.split_encode import encode_pieces  # noqa: E402


def load(path: str | None) -> tokenizers.Tokenizer:
    if path:
        return tokenizers.Tokenizer.from_file(path)
    from inference.engine.loader import load_checkpoint
    from inference.engine.model_store import resolve_model

    tok = load_checkpoint(resolve_model(None), need_weights=False).tokenizer
    assert tok is not None
    return tokenizers.Tokenizer.from_str(tok.to_json())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", default=None, help="a tokenizer.json")
    ap.add_argument("--words", type=int, default=150)
    ap.add_argument("--pieces", default="1,2,3,4,8")
    args = ap.parse_args()
    tok = load(args.tokenizer)
    rng = random.Random(0)
    texts = [prompt(rng, args.words) for _ in range(300)]
    ns = [int(n) for n in args.pieces.split(",")]
    print(f"{len(texts[0])} characters, {len(tok.encode(texts[0]).ids)} tokens")
    print("| gap ms | " + " | ".join(f"{n} piece(s) us" for n in ns) + " |")
    for gap in (0.0, 0.002, 0.05):
        times: dict[int, list[float]] = {n: [] for n in ns}
        for text in texts[: 60 if gap else 300]:
            for n in ns:
                if gap:
                    time.sleep(gap)
                t0 = time.perf_counter()
                if n == 1:
                    tok.encode(text, add_special_tokens=False)
                else:
                    encode_pieces(tok, text, n)
                times[n].append(time.perf_counter() - t0)
        print(f"| {gap * 1e3:g} | " + " | ".join(
            f"{statistics.median(times[n]) * 1e6:.0f}" for n in ns) + " |", flush=True)


if __name__ == "__main__":
    main()
