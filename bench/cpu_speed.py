"""How fast each CPU of this machine runs Python right now: one line, ms per CPU.

    python bench/cpu_speed.py [--repeat 5]

The same dict-heavy loop (300,000 iterations) is timed on every CPU in turn (best of
`--repeat`, pinned with `sched_setaffinity`). On the lent H200 machines the vCPUs run it at
two speeds, ~35 ms and ~68 ms, and which vCPU is slow changes from minute to minute
(docs/BENCHMARKS.md, issue 16, "Twenty-first session"): the hypervisor's other hyperthread of
that core is busy. Every host-bound number (the engine's step at 256 SmolLM2 sequences, the
mesh's tokens per second) follows it, so bench/gpu_session.sh prints this line beside each
configuration it runs.
"""

from __future__ import annotations

import argparse
import os
import time


def loop_ms() -> float:
    """One pass of the probe loop, in ms."""
    d: dict[int, int] = {}
    t = time.perf_counter()
    for i in range(300_000):
        d[i & 1023] = d.get(i & 1023, 0) + i
    return (time.perf_counter() - t) * 1e3


def speeds(repeat: int) -> dict[int, float]:
    """Best-of-`repeat` loop time per CPU this process may run on; restores the affinity."""
    allowed = os.sched_getaffinity(0)
    out = {}
    try:
        for cpu in sorted(allowed):
            os.sched_setaffinity(0, {cpu})
            out[cpu] = min(loop_ms() for _ in range(repeat))
    finally:
        os.sched_setaffinity(0, allowed)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ms = speeds(ap.parse_args().repeat)
    fast = min(ms.values())
    slow = [c for c, v in ms.items() if v > 1.5 * fast]
    print(f"cpu_speed fastest {fast:.1f} ms, {len(slow)}/{len(ms)} CPUs over 1.5x: "
          + " ".join(f"{c}:{v:.0f}" for c, v in ms.items()), flush=True)


if __name__ == "__main__":
    main()
