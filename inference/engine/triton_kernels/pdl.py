"""Programmatic dependent launch (PDL, Hopper and newer) for the kernels of a decode step.

Inside a CUDA graph a small decode kernel costs a few microseconds whatever its size, much of
it the gap between one kernel's last program and the next kernel's first. Launched with PDL,
a kernel may be scheduled while the kernel before it in the stream is still finishing, so
that gap overlaps the other kernel's tail.

The contract every kernel launched this way keeps (`begin`): it waits (`gdc_wait`) for the
kernel before it to complete and its writes to be visible before it reads or writes any
memory that a kernel may write, then lets the kernel after it be scheduled
(`gdc_launch_dependents`). Only a model's weights, which no kernel writes, may be read (or
prefetched) before `begin`, so their trip from memory overlaps the kernel before
(`skinny_linear.stream`); everything else of a kernel comes after it. Since each waits for
its predecessor, which waited for its own, a kernel also sees everything written two or more
launches back. A kernel launched without PDL (cuBLAS, PyTorch's own, ours where it is off)
is ordered by the stream as always.

Off (every launch plain) on GPUs before Hopper, under `TRITON_INTERPRET=1`, and with a Triton
that lacks grid dependency control.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

try:
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:  # an older Triton: `enabled` is False, so `begin` never compiles these
    gdc_launch_dependents = gdc_wait = None


@triton.jit
def begin(PDL: tl.constexpr):
    """The wait of a PDL-launched kernel, before any memory access but the weights' (a no-op
    when PDL is False)."""
    if PDL:
        gdc_wait()
        gdc_launch_dependents()


@functools.cache
def _enabled_on(index: int) -> bool:
    if gdc_wait is None or os.environ.get("TRITON_INTERPRET") == "1":
        return False
    return torch.cuda.get_device_capability(index)[0] >= 9


def enabled(x: torch.Tensor) -> bool:
    """Whether kernels launched on `x`'s device use PDL."""
    return x.is_cuda and _enabled_on(x.device.index or 0)


def options(x: torch.Tensor) -> dict:
    """Launch keywords for a kernel that calls `begin`: its `PDL` flag and, when on, Triton's
    `launch_pdl`."""
    return {"PDL": True, "launch_pdl": True} if enabled(x) else {"PDL": False}
