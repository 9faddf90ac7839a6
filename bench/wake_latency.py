"""What one hand-off between two idle processes costs, by how long they slept before it.

    python bench/wake_latency.py [--rounds 100] [--gaps-ms 0,1,10,50]

At one stream every mesh process sleeps between the hops of a request, and its next hop pays
for waking up (the scheduler, the core's idle and frequency state) and for running Python
that went cold. This bench sends a small frame over a pipe to a second process that does a
fixed piece of Python work (unpickling and re-pickling a step-sized object) and answers; the
sender sleeps `gap` before each round. Per gap and per way of waiting in the answering
process (`block`: a blocking read, as the engine process waits; `spin`: polling the pipe):
the round trip's median and P90, and the answerer's own work time (hot in a loop vs after a
sleep). The CPU frequency governor and current clocks are printed first when the machine
exposes them.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import pickle
import statistics
import struct
import time
from multiprocessing.connection import Connection
from pathlib import Path

_NS = struct.Struct("!q")


def work_item() -> bytes:
    """A frame about as big as one engine step of a few rows, pickled."""
    rows = [(f"cmpl-{i:032x}", [1234, 5678], None, None, 0) for i in range(8)]
    return pickle.dumps({"rows": rows, "stats": {"running": 8, "waiting": 0, "kv": 0.1}})


def answer(conn: Connection, spin: bool) -> None:
    """The answering process: read a frame, do the work, send the work's time back."""
    while True:
        if spin:
            while not conn.poll(0):
                pass
        data = conn.recv_bytes()
        if not data:
            return
        t0 = time.perf_counter_ns()
        obj = pickle.loads(data)
        out = pickle.dumps(obj)
        text = "".join(r[0] for r in obj["rows"])
        assert out and text
        conn.send_bytes(_NS.pack(time.perf_counter_ns() - t0))


def measure(gap_s: float, spin: bool, rounds: int) -> dict[str, float]:
    here, there = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=answer, args=(there, spin), daemon=True)
    proc.start()
    item = work_item()
    for _ in range(5):  # start-up out of the way
        here.send_bytes(item)
        here.recv_bytes()
    rtts, works = [], []
    for _ in range(rounds):
        if gap_s:
            time.sleep(gap_s)
        t0 = time.perf_counter_ns()
        here.send_bytes(item)
        (work,) = _NS.unpack(here.recv_bytes())
        rtts.append((time.perf_counter_ns() - t0) / 1e3)
        works.append(work / 1e3)
    here.send_bytes(b"")
    proc.join(5)
    rtts.sort()
    return {"rtt_p50_us": statistics.median(rtts), "rtt_p90_us": rtts[int(0.9 * len(rtts))],
            "work_p50_us": statistics.median(works)}


def cpu_clocks() -> str:
    base = Path("/sys/devices/system/cpu/cpu0/cpufreq")
    parts = []
    for name in ("scaling_governor", "scaling_driver", "scaling_min_freq", "scaling_max_freq"):
        f = base / name
        parts.append(f"{name}={f.read_text().strip() if f.exists() else '-'}")
    mhz = [line.split(":")[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
           if line.startswith("cpu MHz")]
    parts.append(f"cpu MHz now: {', '.join(sorted(set(m.split('.')[0] for m in mhz)))}")
    idle = Path("/sys/devices/system/cpu/cpu0/cpuidle")
    parts.append("cpuidle states: " + (", ".join(sorted(p.name for p in idle.iterdir()))
                                       if idle.exists() else "none exposed"))
    return "; ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--gaps-ms", default="0,1,10,50")
    args = ap.parse_args()
    print(cpu_clocks(), f"; {os.cpu_count()} cpus", flush=True)
    print("| answerer waits | gap ms | round trip P50 / P90 us | answerer's work P50 us |")
    print("|---|---|---|---|")
    for spin in (False, True):
        for gap in (float(g) for g in args.gaps_ms.split(",")):
            r = measure(gap / 1e3, spin, args.rounds)
            print(f"| {'spin' if spin else 'block'} | {gap:g} | {r['rtt_p50_us']:.0f} / "
                  f"{r['rtt_p90_us']:.0f} | {r['work_p50_us']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
