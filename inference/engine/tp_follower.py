"""A follower rank (1..N-1) of a tensor-parallel engine: its process and its step loop.

Contract:
- `main` is the process's target (spawned by tp_launch.py in rank 0's process). It joins the
  group, builds the same engine as rank 0 through `LLMEngine.from_model` (its own slices of
  the weights and of the KV pool, the same CUDA graphs), then loops: receive a `StepPlan` on
  the pipe, apply its block copies, receive the step's tensor, run the forward and, when the
  plan has rows, the LM head (its logits go to rank 0). A `None` plan or a closed pipe (rank 0
  is gone) ends the loop and the process.
- It never schedules or samples. It ignores SIGINT and SIGTERM, as the engine process does
  (a draining worker's process group receives them); a watchdog thread exits it when rank 0's
  process dies, even while it is blocked in a collective.
- Any error (loading, a failed collective) is printed and exits non-zero; rank 0's watchdog
  then takes the whole engine down.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
from multiprocessing.connection import Connection, wait

import torch

from . import distributed
from .config import EngineConfig
from .placement import pick_device
from .runner import ModelRunner
from .tp_runner import StepPlan, unpack


def main(rank: int, size: int, init_file: str, spec: str | None, config: EngineConfig,
         plans: Connection, torch_threads: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()
    torch.set_num_threads(torch_threads)
    from .engine import LLMEngine

    distributed.init(rank, size, init_file, pick_device(config, rank))
    engine = LLMEngine.from_model(spec, config)
    with contextlib.suppress(EOFError):  # rank 0 closed the pipe: it is gone
        follow(engine.runner, plans)
    distributed.destroy()


def _exit_with(parent: multiprocessing.process.BaseProcess) -> None:
    wait([parent.sentinel])
    os._exit(1)


@torch.inference_mode()
def follow(runner: ModelRunner, plans: Connection) -> None:
    """Run rank 0's steps until a `None` plan."""
    device = runner.device
    while (plan := plans.recv()) is not None:
        step(runner, plan, device)


def step(runner: ModelRunner, plan: StepPlan, device: torch.device) -> None:
    """Hot path: one step of rank 0's, on this rank's slices."""
    runner.copy_blocks(plan.copies)
    payload = torch.empty(plan.payload_len, dtype=torch.int64, device=device)
    ids, positions, meta, rows = unpack(plan, distributed.broadcast(payload))
    hidden = runner.forward(ids, positions, meta)
    if plan.num_rows:
        runner.model.compute_logits(hidden[rows])
