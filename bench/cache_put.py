"""What storing one answer in the result cache costs, on this machine: the gateway's part
(`kvmesh.coalesce.compact`, `cache.client.split_puts`, encoding each put) and the cache
service's (decoding a put, encoding the entry it writes to Redis), for an answer of `--tokens`
one-token chunks as a worker streams them, stored as streamed and compacted.

    python bench/cache_put.py [--tokens 128] [--rounds 2000]
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.timing import median_us
from cache.client import DEFAULT_MAX_PAYLOAD, HEADROOM, split_puts
from kvmesh import wire
from kvmesh.coalesce import compact
from kvmesh.wire import CacheHit, CachePut, Chunk, UsageInfo


def gateway(chunks: list[Chunk]) -> list[bytes]:
    return [wire.encode(p) for p in split_puts("k" * 64, chunks, DEFAULT_MAX_PAYLOAD - HEADROOM)]


def service(frames: list[bytes]) -> None:
    for frame in frames:
        put = wire.decode(frame)
        assert isinstance(put, CachePut)
        wire.encode(CacheHit(put.key, put.chunks, put.part, put.parts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2000)
    args = ap.parse_args()
    chunks = [Chunk("cmpl-" + "a" * 32, i, 0, " word", [1000 + i]) for i in range(args.tokens)]
    chunks[-1].finish_reason, chunks[-1].usage = "length", UsageInfo(200, args.tokens)
    for name, store in (("as streamed", lambda: gateway(chunks)),
                        ("compacted", lambda: gateway(compact(chunks)))):
        frames = store()
        serve = functools.partial(service, frames)
        warm = args.rounds // 10
        print(f"{name}: gateway {median_us(store, args.rounds, warm):.1f} us, cache service "
              f"{median_us(serve, args.rounds, warm):.1f} us, "
              f"{sum(map(len, frames))} bytes in {len(frames)} put(s)")


if __name__ == "__main__":
    main()
