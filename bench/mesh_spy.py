"""Where the mesh's processes spend their time under load: py-spy on a `bench/gpu_serving.py`
mesh run, and the breakdown of what it recorded.

    python bench/mesh_spy.py record OUT [--delay 4] [--seconds 8]
    python bench/mesh_spy.py show FILE [--under FRAME] [--depth 1] [--top 20]

`record` waits (up to 4 minutes) for a mesh run's client processes and its engine process,
waits `--delay` seconds more (the run's warm-up), then records the engine process, the worker,
the router and the busiest gateway at once for `--seconds` (`py-spy record --nonblocking -r
200 -f raw`: collapsed stacks, idle samples left out) into OUT/spy-<process>.txt, and prints
each one's breakdown. Start it in the background just before the run:

    python bench/mesh_spy.py record $OUT & python bench/gpu_serving.py ... --skip-engine; wait

`show` prints one file's samples by frame, each frame written `function (file.py)`: with
`--under FRAME` (a substring of one, such as `run (engine_loop.py)`, the engine process's
loop), the frames called from its innermost match, `--depth` deep, their share of the samples
under it (`<self>`: the frame itself); without, the innermost `--depth` frames of every
sample (where the time is spent, whoever called).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ENGINE_LOOP = "run (engine_loop.py)"
_FILE = re.compile(r" \(.*?/([^/]+\.py):\d+\)")


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("out", type=Path)
    rec.add_argument("--delay", type=float, default=4.0)
    rec.add_argument("--seconds", type=int, default=8)
    show_ = sub.add_parser("show")
    show_.add_argument("file", type=Path)
    show_.add_argument("--under", default="")
    show_.add_argument("--depth", type=int, default=1)
    show_.add_argument("--top", type=int, default=20)
    args = ap.parse_args()
    if args.what == "show":
        print(show(args.file, args.under, args.depth, args.top))
        return
    files = record(args.out, args.delay, args.seconds)
    for name, path in files.items():
        under = ENGINE_LOOP if name == "engine" else ""
        print(f"== {name}\n{show(path, under, 1 if under else 2, 16)}", flush=True)


def record(out: Path, delay: float, seconds: int) -> dict[str, Path]:
    """py-spy files of the run's processes (see the module doc), by process."""
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + 240
    while (found := find_run()) is None:
        if time.time() > deadline:
            sys.exit("mesh_spy: no gpu_serving mesh run found")
        time.sleep(0.5)
    time.sleep(delay)
    files = {name: out / f"spy-{name}.txt" for name in found}
    spies = [subprocess.Popen(["py-spy", "record", "--nonblocking", "-r", "200", "-d",
                               str(seconds), "-f", "raw", "-o", str(files[name]), "-p",
                               str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for name, pid in found.items()]
    for spy in spies:
        _, err = spy.communicate()
        if spy.returncode:
            print("mesh_spy: py-spy failed:", err.decode()[-400:], file=sys.stderr)
    return {name: path for name, path in files.items() if path.exists()}


def show(path: Path, under: str, depth: int, top: int) -> str:
    """The breakdown of one raw py-spy file (see the module doc)."""
    counts: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = [_FILE.sub(r" (\1)", f) for f in stack.split(";")]
        if under:
            hits = [i for i, f in enumerate(frames) if under in f]
            if not hits:
                continue
            key = ";".join(frames[hits[-1] + 1:hits[-1] + 1 + depth]) or "<self>"
        else:
            key = ";".join(frames[-depth:])
        counts[key] += int(n)
        total += int(n)
    rows = [f"{n:6d} {100 * n / max(1, total):5.1f} %  {k}" for k, n in counts.most_common(top)]
    return "\n".join([f"{total} samples", *rows])


def find_run() -> dict[str, int] | None:
    """The pids of a bench/gpu_serving.py mesh's engine, worker, router and busiest gateway,
    once its clients run (None before)."""
    procs = {int(d.name): _cmd(int(d.name)) for d in Path("/proc").iterdir() if d.name.isdigit()}
    parent = {p: _cmd(_ppid(p)) for p in procs}
    clients = [p for p, c in procs.items() if "spawn_main" in c and "gpu_serving" in parent[p]]
    engine = [p for p, c in procs.items() if "spawn_main" in c and "serve worker" in parent[p]]
    if not clients or not engine:
        return None
    found = {"engine": engine[0]}
    for name in ("worker", "router"):
        pids = [p for p, c in procs.items() if f"serve {name}" in c]
        if pids:
            found[name] = pids[0]
    gateways = [p for p, c in procs.items() if "serve gateway" in c and "spawn_main" not in c]
    if gateways:  # the supervisor's children are gateways too: the busiest is the one to see
        found["gateway"] = max(gateways, key=_ticks)
    return found


def _cmd(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _ticks(pid: int) -> int:
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(f[11]) + int(f[12])
    except (OSError, ValueError, IndexError):
        return 0


if __name__ == "__main__":
    main()
