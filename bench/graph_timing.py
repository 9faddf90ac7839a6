"""Kernel time without host launch time: a call captured `reps` times in one CUDA graph."""

from __future__ import annotations

from collections.abc import Callable

import torch


def graph_us(call: Callable[[], object], reps: int = 20) -> float:
    """Microseconds per `call()`: `reps` calls captured in one CUDA graph, replayed five times
    (host launch time, tens of microseconds for a Triton kernel, stays out). `call` must
    already have run once (compiled, its library's kernel picked) and write only into
    buffers it owns."""
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            call()
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / (5 * reps) * 1e3
