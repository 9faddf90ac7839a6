"""bench/gpu_summary.py: a 1-stream run's line carries the mesh's TTFT less its engine's, and
each run's slow-CPU count whatever its label looks like."""

from __future__ import annotations

import json
from pathlib import Path

from bench.gpu_summary import summary


def test_a_one_stream_run_shows_mesh_less_engine_and_its_slow_cpus(tmp_path: Path) -> None:
    engine = {"ttft_ms": 1.60, "decode_step_ms": 0.75}
    one = {"streams": 1, "out_tok_s": 1296.0, "requests": 81, "errors": 0, "ttft_p50_ms": 4.31,
           "ttft_p99_ms": 6.0, "itl_p50_ms": 0.74, "itl_p99_ms": 0.75,
           "means": {"route_ms": 1.1, "worker_ttft_ms": 2.4}}
    many = {**one, "streams": 32, "ttft_p50_ms": 9.5}
    (tmp_path / "small-one-this-1.log").write_text(
        f"booting\nengine: {json.dumps(engine)}\n{json.dumps(one)}\n{json.dumps(many)}\n")
    (tmp_path / "cpu_speed.txt").write_text(
        "small-one-this-1 cpu_speed fastest 22.2 ms, 2/16 CPUs over 1.5x: 0:22 1:40\n"
        "mesh tree-1 cpu_speed fastest 22.4 ms, 0/16 CPUs over 1.5x: 0:22\n")
    lines = summary(tmp_path)
    assert lines[0].startswith("small-one-this-1 engine TTFT 1.60 ms")
    assert "TTFT 4.31 ms  mesh - engine +2.71 ms" in lines[1]
    assert lines[1].endswith("slow CPUs 2/16")
    assert "mesh - engine" not in lines[2]  # 32 streams: the target is the one stream's
