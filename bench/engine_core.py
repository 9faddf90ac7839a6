"""Give a running mesh's engine process a whole core: find which two CPUs share one, then pin.

    python bench/engine_core.py siblings            the pair of CPUs that slow each other most
    python bench/engine_core.py pin CPU SIBLING     once a bench/gpu_serving.py mesh has its
                                                    clients going: the engine process on CPU,
                                                    every other thread off CPU and SIBLING

Why: on the lent H200 machines a vCPU runs Python at half speed while the hypervisor's other
hyperthread of its core is busy, and the guest does not see which vCPUs pair up
(docs/BENCHMARKS.md, issue 12, "Twenty-first session"). `siblings` finds a pair by loading one
CPU with a busy loop and timing `cpu_speed.loop_ms` on each other CPU, against that CPU's own
time just before; the pair with the largest slowdown is printed as `pair A B ratio`. Run it on
an idle machine: other load on the CPUs slows the probe too.
`bash bench/gpu_session.sh pinned` alternates the mesh unpinned and pinned so.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.cpu_speed import loop_ms
from bench.mesh_spy import find_run


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


def pin(cpu: int, sibling: int, wait_s: float = 240.0) -> None:
    deadline = time.monotonic() + wait_s
    while (run := find_run()) is None:
        if time.monotonic() > deadline:
            sys.exit("pin: no mesh run found")
        time.sleep(0.3)
    engine = run["engine"]
    rest = os.sched_getaffinity(0) - {cpu, sibling}
    moved = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        for task in (proc / "task").glob("*"):
            try:
                os.sched_setaffinity(int(task.name), {cpu} if int(proc.name) == engine else rest)
                moved += 1
            except OSError:  # gone, or a kernel thread
                pass
    print(f"pin: engine {engine} on cpu {cpu}, {sibling} kept free; {moved} threads", flush=True)


def main() -> None:
    if sys.argv[1:2] == ["siblings"]:
        a, b, ratio = siblings()
        print(f"pair {a} {b} {ratio:.2f}", flush=True)
    elif sys.argv[1:2] == ["pin"] and len(sys.argv) == 4:
        pin(int(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
