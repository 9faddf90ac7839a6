"""One short table of what a `bench/gpu_session.sh` call left under $OUT, to print last.

    python bench/gpu_summary.py $OUT

Why: a device call brings back only a few of its files, so the call's last lines must carry
the numbers. Reads, when present: `alone.txt` (the engine alone at 256 streams, one line per
run), `mesh-<label>.log` (the mesh's level rows), `small-<label>.log` (`pinned-small`, `ttft`,
`one`: the engine's TTFT and decode step, then 1 and 32 streams; at 1 stream, the mesh's TTFT
less the engine's), `engine_ttft.txt` (`ttft`: the engine's first token by idle gap,
bench/engine_ttft.py; a line may start with its tree and round), `pair.txt` and
`cpu_speed.txt` (the slow-CPU count before each run). Rows keep the order the runs were made
in.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def _rows(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text(errors="replace").splitlines()
            if line.startswith('{"streams"')]


def _engine(log: Path) -> dict:
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("engine: "):
            return json.loads(line[8:])
    return {}


def _slow(out: Path) -> dict[str, str]:
    """Label of each run -> 'k/n' CPUs over 1.5x the fastest, from cpu_speed.txt."""
    slow = {}
    speed = out / "cpu_speed.txt"
    for line in speed.read_text().splitlines() if speed.exists() else []:
        m = re.match(r"(.+?) cpu_speed .*?(\d+/\d+) CPUs", line)
        if m:
            slow[m.group(1)] = m.group(2)
    return slow


def summary(out: Path) -> list[str]:
    lines, slow = [], _slow(out)
    if (out / "pair.txt").exists():
        lines.append("core pair: " + (out / "pair.txt").read_text().strip())
    if (out / "alone.txt").exists():
        for line in (out / "alone.txt").read_text().splitlines():
            label, _, body = line.partition(" {")
            run = json.loads("{" + body)
            step = run["steps"]["256"]
            lines.append(f"{label:<16} {run['out_tok_s']['256']:>9,.0f} tok/s  step "
                         f"{step['step_ms']:.2f} ms  seqs {step['batch_seqs']}  slow CPUs "
                         f"{slow.get(label, '?')}")
    for log in sorted(out.glob("mesh-*.log"), key=lambda p: p.stat().st_mtime):
        label = "mesh " + log.stem.removeprefix("mesh-")
        for row in _rows(log):
            means, cpu = row.get("means", {}), row.get("cpu_cores", {})
            lines.append(f"{label:<16} {row['out_tok_s']:>9,.0f} tok/s  step "
                         f"{means.get('step_ms', 0):.2f} ms  seqs {means.get('batch_seqs', 0)}  "
                         f"TTFT {row['ttft_p50_ms']:.1f} ms  errors {row['errors']}  clients "
                         f"{cpu.get('clients', 0)}  gateways {cpu.get('gateway', 0)} cores  "
                         f"slow CPUs {slow.get(label, '?')}")
    for log in sorted(out.glob("small-*.log"), key=lambda p: p.stat().st_mtime):
        engine = _engine(log)
        if engine:
            lines.append(f"{log.stem:<16} engine TTFT {engine['ttft_ms']:.2f} ms, decode step "
                         f"{engine['decode_step_ms']:.2f} ms")
        for row in _rows(log):
            means = row.get("means", {})
            gap = (f"  mesh - engine {row['ttft_p50_ms'] - engine['ttft_ms']:+.2f} ms"
                   if engine and row["streams"] == 1 else "")
            lines.append(f"{log.stem:<16} {row['streams']:>3} streams  TTFT "
                         f"{row['ttft_p50_ms']:.2f} ms{gap}  ITL {row['itl_p50_ms']:.2f} ms  "
                         f"route {means.get('route_ms', 0)} ms  worker TTFT "
                         f"{means.get('worker_ttft_ms', 0)} ms  errors {row['errors']}  slow CPUs "
                         f"{slow.get(log.stem, '?')}")
    ttft = out / "engine_ttft.txt"
    for line in ttft.read_text().splitlines() if ttft.exists() else []:
        # `<tree>-<round> {...}` (the `ttft` phase), or the JSON alone
        tag, body = ("", line) if line.startswith("{") else line.split(" ", 1)
        run = json.loads(body)
        for key, marks in run.items():
            if isinstance(marks, dict):
                lines.append(f"engine {tag} {key:<12} " + "  ".join(
                    f"{k} {v:.2f}" for k, v in marks.items()) + " ms")
    return lines


if __name__ == "__main__":
    print("\n".join(summary(Path(sys.argv[1]))))
