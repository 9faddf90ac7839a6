"""Mixed traffic for a running mesh, so that every dashboard panel has something to show:
`python scripts/demo_traffic.py --url http://127.0.0.1:8000 --redis-url redis://... --seconds 600`
(`kvmesh up`'s Redis has a password: its URL is in `~/.cache/kvmesh/redis.url`).

Three tenants (keys created in the mesh's Redis): `globex` without limits sends chat with a
shared system prompt (prefix-cache hits) and repeats greedy questions (result-cache hits);
`acme` (3 requests a minute) sends faster than its limit, so some of its requests get 429;
`initech` (a 300-token-per-minute budget) runs into its token limit. Everything uses the
official openai client; errors are counted, not raised. docs/OBSERVABILITY.md shows the
dashboards of one such run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SYSTEM = ("You are a concise assistant for a hardware store. Answer in one short sentence. "
          "Prices are in euros. Opening hours are 8 to 18 on weekdays.")
QUESTIONS = ["Do you sell hammers?", "When do you open on Monday?", "Is there parking?",
             "Do you cut keys?", "What does a drill cost?", "Can I return paint?"]
TENANTS = {"globex": {}, "acme": {"rpm": 3}, "initech": {"tpm": 300}}


def make_keys(redis_url: str) -> dict[str, str]:
    from auth.cli import create_key

    async def make() -> dict[str, str]:
        return {t: (await create_key(redis_url, {"name": t, "models": ["*"], **limits},
                                     "demo traffic"))[0] for t, limits in TENANTS.items()}

    return asyncio.run(make())


def client_loop(url: str, key: str, model: str, label: str, greedy: bool, until: float,
                pause: float, counts: Counter[str]) -> None:
    from openai import APIStatusError, OpenAI

    client = OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=120)
    rng = random.Random(label)
    while time.monotonic() < until:
        q = rng.choice(QUESTIONS)
        try:
            stream = client.chat.completions.create(
                model=model, stream=True, max_tokens=16 if greedy else rng.randint(8, 32),
                temperature=0 if greedy else 0.8,
                messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}])
            for _ in stream:
                pass
            counts[f"{label} ok"] += 1
        except APIStatusError as exc:
            counts[f"{label} {exc.status_code}"] += 1
        time.sleep(pause * rng.uniform(0.5, 1.5))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--redis-url", default=os.environ.get("KVMESH_REDIS_URL",
                                                         "redis://127.0.0.1:6379/0"))
    p.add_argument("--model", default="SmolLM2-135M-Instruct")
    p.add_argument("--seconds", type=float, default=600)
    args = p.parse_args()
    keys = make_keys(args.redis_url)
    until = time.monotonic() + args.seconds
    counts: Counter[str] = Counter()
    plan = [("globex", "chat", 0.5), ("globex", "chat", 1.0), ("globex", "repeat", 2.0),
            ("acme", "chat", 0.5), ("initech", "chat", 0.3)]
    threads = [threading.Thread(target=client_loop, daemon=True, args=(
        args.url, keys[tenant], args.model, f"{tenant}/{kind}", kind == "repeat", until, pause,
        counts))
        for tenant, kind, pause in plan]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        time.sleep(10)
        print(dict(sorted(counts.items())), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
