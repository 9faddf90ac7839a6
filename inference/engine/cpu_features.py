"""Whether this CPU computes bfloat16 dot products natively, read from /proc/cpuinfo.

PyTorch's bfloat16 matmuls on the CPU (oneDNN) run at about twice the float32 rate where the
CPU has bf16 dot-product instructions (x86: AVX512_BF16 or AMX-BF16; Arm: the BF16 extension),
and slower than float32 where it must emulate them. `EngineConfig.dtype = "auto"` uses this to
pick bfloat16 only where it is the faster choice.
"""

from __future__ import annotations

import platform
from pathlib import Path

# The flags that mean native bf16 dot products, per architecture, best first. Arm's kernel
# lists its features on "Features" lines, x86's on "flags" lines.
BF16_FLAGS = {"x86_64": ("amx_bf16", "avx512_bf16"), "aarch64": ("bf16",)}
ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}
FLAG_LINES = ("flags", "features")


def native_bf16_flag(cpuinfo: str, machine: str) -> str | None:
    """The cpuinfo flag by which every listed core of a `machine` (as `platform.machine()`
    names it) has native bfloat16 dot products, or None: no such flag, another
    architecture, or no flag lines at all."""
    machine = machine.lower()
    wanted = BF16_FLAGS.get(ALIASES.get(machine, machine), ())
    cores = [set(value.split()) for key, _, value in
             (line.partition(":") for line in cpuinfo.splitlines())
             if key.strip().lower() in FLAG_LINES]
    if not cores:
        return None
    common = set.intersection(*cores)  # a hybrid CPU: only what every core has
    return next((flag for flag in wanted if flag in common), None)


def this_cpu_bf16_flag() -> str | None:
    """`native_bf16_flag` of this machine; None where /proc/cpuinfo cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return native_bf16_flag(text, platform.machine())
