"""Two engines in two processes share one GPU, each sized by `gpu_memory_utilization` as its
own share (issue 13, item 14): the second one used to count the first one's memory as its own
and refuse to start. Both must load, size similar KV pools that together stay within the two
shares, and generate, while both hold their memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs CUDA", allow_module_level=True)
pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[2]
SHARE = 0.42
CHILD = f"""
import json, sys, torch
from inference import LLM, SamplingParams
llm = LLM("dummy:smollm2-135m", device="cuda", dtype="bfloat16", max_model_len=1024,
          max_num_seqs=8, max_num_batched_tokens=512, gpu_memory_utilization={SHARE})
plan = llm.engine.kv_plan
print(json.dumps({{"num_blocks": plan.num_blocks, "kv_bytes": plan.kv_bytes,
                  "total": plan.total_bytes, "others": plan.others_bytes}}), flush=True)
sys.stdin.readline()  # hold the memory until the test says go
out = llm.generate([[1, 2, 3, 4, 5]], SamplingParams(temperature=0.0, max_tokens=8,
                                                   ignore_eos=True))
print(json.dumps({{"tokens": len(out[0].outputs[0].token_ids)}}), flush=True)
"""


def _start() -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", CHILD], cwd=ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                [str(ROOT), os.environ.get("PYTHONPATH", "")])})


def _line(proc: subprocess.Popen[str]) -> dict:
    line = proc.stdout.readline()
    assert line, f"the engine process exited ({proc.wait(60)})"
    return json.loads(line)


def test_two_engines_with_a_share_each_both_load_and_generate() -> None:
    import gc

    gc.collect()
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info()
    if free < 2 * SHARE * total:  # earlier tests in this pytest process hold the rest
        pytest.skip(f"needs {2 * SHARE:.0%} of the GPU free, {free / total:.0%} is: run this "
                    "file alone (python -m pytest tests/gpu/test_two_engines_share_a_gpu.py)")
    first = _start()
    try:
        a = _line(first)  # loaded and holding its pool
        second = _start()
        try:
            b = _line(second)
            assert b["others"] >= a["kv_bytes"]  # it saw the first engine ...
            assert b["kv_bytes"] >= 0.9 * a["kv_bytes"]  # ... and still got its share
            assert a["kv_bytes"] + b["kv_bytes"] <= 2 * SHARE * a["total"]
            for proc in (first, second):
                proc.stdin.write("go\n")
                proc.stdin.flush()
            assert _line(first)["tokens"] == 8 and _line(second)["tokens"] == 8
        finally:
            second.kill()
    finally:
        first.kill()
