"""Which two CPUs share a core: the pair of CPUs that slow each other most.

    python bench/cpu_siblings.py        prints `pair A B ratio`

Why: on the lent H200 machines a vCPU runs Python at half speed while the hypervisor's other
hyperthread of its core is busy, and the guest does not see which vCPUs pair up (its
/sys topology shows one thread per core; docs/BENCHMARKS.md, issue 12, "Twenty-first
session"). This loads one CPU with a busy loop and times `cpu_speed.loop_ms` on each other
CPU, against that CPU's own time just before; the pair with the largest slowdown is printed.
Run it on an idle machine: other load on the CPUs slows the probe too. `kvmesh up
--engine-cpus A,B` then gives the engine that core; `bash bench/gpu_session.sh pinned`
alternates the engine alone and the mesh with and without it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.cpu_speed import loop_ms


def _on(cpu: int, repeat: int = 2) -> float:
    os.sched_setaffinity(0, {cpu})
    return min(loop_ms() for _ in range(repeat))


def siblings() -> tuple[int, int, float]:
    """(a, b, slowdown): the CPU pair where a busy loop on `a` slows `b` the most."""
    cpus = sorted(os.sched_getaffinity(0))
    best = (cpus[0], cpus[0], 1.0)
    try:
        for b in cpus:
            for a in cpus:
                if a == b:
                    continue
                solo = _on(b)
                hog = subprocess.Popen(["taskset", "-c", str(a), sys.executable, "-c",
                                        "while True: pass"])
                time.sleep(0.05)
                ratio = _on(b) / solo
                hog.kill()
                hog.wait()
                if ratio > best[2]:
                    best = (a, b, ratio)
    finally:
        os.sched_setaffinity(0, set(cpus))
    return best


def main() -> None:
    a, b, ratio = siblings()
    print(f"pair {a} {b} {ratio:.2f}", flush=True)


if __name__ == "__main__":
    main()
