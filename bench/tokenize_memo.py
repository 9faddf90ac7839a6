"""How long one prompt takes to tokenize, whole or segment by segment through the memo, hot and
after a sleep.

    python bench/tokenize_memo.py [--tokenizer FILE] [--words 150]

The router tokenizes every text prompt on the first token's path
(inference/engine/split_encode.py). Each text is encoded whole (`tokenizers`, one call), by
segments with an empty memo (every segment a miss: a text of words never seen), and by
segments with a memo that 20 other texts of the kind and the texts measured before it filled;
back to back (gap 0) and after sleeping 2 or 50 ms before each (as at one stream, where the
router sleeps between requests). Two kinds of text: `--words` random words of the serving
benchmark's list, and the paragraphs of this repository's docs (prose, tables and code).
Medians in microseconds. Without `--tokenizer`, the default model's.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import tokenizers

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gpu_serving import prompt  # noqa: E402
from inference.engine.split_encode import SegmentEncoder, splittable  # noqa: E402


def load(path: str | None) -> tokenizers.Tokenizer:
    if path:
        return tokenizers.Tokenizer.from_file(path)
    from inference.engine.loader import load_checkpoint
    from inference.engine.model_store import resolve_model

    tok = load_checkpoint(resolve_model(None), need_weights=False).tokenizer
    assert tok is not None
    return tokenizers.Tokenizer.from_str(tok.to_json())


def docs_paragraphs() -> list[str]:
    texts = []
    for path in sorted((ROOT / "docs").glob("*.md")):
        texts += [p for p in path.read_text().split("\n\n") if len(p) >= 200]
    return texts


def timed(encode: Callable[[str], object], texts: list[str], gap: float) -> float:
    """Median microseconds of `encode` over `texts`, sleeping `gap` seconds before each."""
    times = []
    for text in texts:
        if gap:
            time.sleep(gap)
        t0 = time.perf_counter()
        encode(text)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", default=None, help="a tokenizer.json")
    ap.add_argument("--words", type=int, default=150)
    args = ap.parse_args()
    tok = load(args.tokenizer)
    assert splittable(tok), "this tokenizer is encoded whole: nothing to compare"
    rng = random.Random(0)
    kinds = {"random words": [prompt(rng, args.words) for _ in range(300)],
             "docs paragraphs": docs_paragraphs()}
    print("| text | gap ms | whole us | segments, empty memo | segments, filled memo |")
    print("|---|---|---|---|---|")
    for kind, texts in kinds.items():
        for gap in (0.0, 0.002, 0.05):
            some = texts[20 : 80 if gap else None]
            warm = SegmentEncoder(tok)
            for text in texts[:20]:
                warm.encode(text)
            row = [timed(lambda t: tok.encode(t, add_special_tokens=False), some, gap),
                   timed(lambda t: SegmentEncoder(tok).encode(t), some, gap),
                   timed(warm.encode, some, gap)]
            print(f"| {kind} | {gap * 1e3:g} | " + " | ".join(f"{x:.0f}" for x in row) + " |",
                  flush=True)


if __name__ == "__main__":
    main()
