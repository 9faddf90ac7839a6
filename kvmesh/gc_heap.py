"""Keep a process's startup heap out of the garbage collector's full passes.

`freeze()` collects once, then moves every object alive now (modules, classes, functions, a
model's parameters, a tokenizer's tables) into the permanent generation, which the collector
never scans again (`gc.freeze`, as vLLM's engine core and SGLang's scheduler do). Why: a full
collection walks every tracked object, and a process that has imported torch holds ~175k of
them; one pass cost ~110 ms on a 2-core dev CPU (`gc.collect()` after loading SmolLM2), a
stall of every step, message and stream of that process. Afterwards a full pass walks only
what was made since (requests in flight, their sequences and streams).

Call it once startup is done, in a process that lives as long as what it froze: each service
before its loop runs (`kvmesh.eventloop`), the engine process once the model is loaded
(`inference.engine_loop`), a benchmark's engine alone likewise. A frozen object that later
dies in a reference cycle is never freed, so `LLM` does not freeze: a program (a test
session) may build and drop many engines.
"""

from __future__ import annotations

import gc


def freeze() -> None:
    """Collect what startup left behind, then freeze what is alive (see the module doc)."""
    gc.collect()
    gc.freeze()
