"""CPU sets: the CPUs an engine process runs on, written as Linux writes them ("3,11", "2-5").

Why an engine gets CPUs of its own: a GPU engine's step is bound by one Python thread when the
batch is large, and that thread runs at about half speed while the other hyperthread of its
core is busy (docs/BENCHMARKS.md, issue 12, "Twenty-second session"). Giving the engine process
both hyperthreads of one core, and keeping every other process of the mesh off them, keeps the
rest of the mesh from slowing it that way, where the host's topology is known (on the lent VMs,
whose hypervisor seems to move vCPUs between cores, the gain did not stand out from their
spread). `kvmesh up --engine-cpus` and the worker's `engine_cpus` use these.

Contract:
- `parse_cpus("3,11")` is `(3, 11)`; ranges expand (`"2-4"` is `(2, 3, 4)`); the result is
  sorted without repeats; "" is `()`, meaning no set (the process runs where the OS puts it).
  Anything else raises ValueError naming the text.
- `parse_groups("3,11/4,12")` is one set per worker, in worker order, split on "/".
- `check_exist(cpus)` raises ValueError for a CPU this machine does not have.
"""

from __future__ import annotations

import os


def parse_cpus(text: str) -> tuple[int, ...]:
    cpus: set[int] = set()
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        lo, dash, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi if dash else lo)
        except ValueError:
            raise ValueError(f"{text!r} is not a CPU list (like 3,11 or 2-5)") from None
        if first < 0 or last < first:
            raise ValueError(f"{text!r} is not a CPU list (like 3,11 or 2-5)")
        cpus.update(range(first, last + 1))
    return tuple(sorted(cpus))


def parse_groups(text: str) -> list[tuple[int, ...]]:
    """One CPU set per worker ("3,11/4,12"); "" is no groups."""
    return [parse_cpus(group) for group in text.split("/")] if text.strip() else []


def check_exist(cpus: tuple[int, ...]) -> None:
    count = os.cpu_count() or 1
    missing = [c for c in cpus if c >= count]
    if missing:
        raise ValueError(f"CPU {missing[0]} does not exist here (CPUs 0-{count - 1})")


def text(cpus: tuple[int, ...] | set[int]) -> str:
    """`cpus` as a list `parse_cpus` reads back ("3,11")."""
    return ",".join(map(str, sorted(cpus)))
