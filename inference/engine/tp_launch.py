"""Starting, feeding and stopping the other ranks of a tensor-parallel engine (rank 0's side).

Contract:
- `tensor_parallel(spec, config, model_config)` wraps building rank 0's engine. With
  `tensor_parallel_size` N > 1 in a process that is in no group yet, it checks that the model
  splits N ways (ValueError naming `tensor_parallel_size`), spawns ranks 1..N-1
  (tp_follower.py, multiprocessing spawn), each building the same engine from `spec` with only
  its own slices, and joins the group as rank 0. If building fails, the ranks are stopped
  again. Elsewhere (TP=1, or inside a follower) it does nothing; an engine of another size
  in a process that is in a group is refused (its layers would take that group).
- `send_plan(plan)` hands each step's plan to every follower over its own pipe (tp_runner.py
  sends it; the step's tensors follow as one broadcast). An idle engine sends nothing, and an
  idle follower waits on its pipe, not in a collective, so idling never hits the group's
  timeout.
- A follower that dies ends this process: a watchdog thread waits on the followers and, unless
  `shutdown` is under way, writes which rank died to stderr and exits with `RANK_DIED` (a
  collective blocked on a dead NCCL peer cannot be interrupted any other way). The worker
  then sees its engine process gone, fails its requests and exits non-zero. Followers watch
  this process the same way (tp_follower.py), so no rank outlives the engine.
- `shutdown()` stops the followers (a `None` plan; killed after `STOP_TIMEOUT_S`) and leaves
  the group; a later engine in this process may start a new one.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait

import torch

from . import distributed
from .config import EngineConfig, ModelConfig
from .parallel_linear import check_divisible
from .placement import pick_device

log = logging.getLogger("kvmesh.engine.tp")
RANK_DIED = 70  # exit status of an engine process whose follower rank died
STOP_TIMEOUT_S = 10.0


@dataclass
class _Followers:
    procs: list[multiprocessing.process.BaseProcess]
    plans: list[Connection]
    rendezvous_dir: str
    stopping: threading.Event = field(default_factory=threading.Event)


_followers: _Followers | None = None


@contextlib.contextmanager
def tensor_parallel(spec: str | None, config: EngineConfig,
                    model_config: ModelConfig) -> Iterator[None]:
    in_group = distributed.tp_size()
    if in_group > 1 and config.tensor_parallel_size != in_group:  # layers take the group
        raise RuntimeError(f"tensor_parallel_size: {config.tensor_parallel_size}, but this "
                           f"process is already in a group of {in_group} (one per process)")
    if config.tensor_parallel_size == 1 or in_group > 1:
        yield
        return
    _check(config, model_config)
    _launch(spec, config)
    try:
        yield
    except BaseException:
        shutdown()
        raise


def _check(config: EngineConfig, mcfg: ModelConfig) -> None:
    size = config.tensor_parallel_size
    if size < 1:
        raise ValueError(f"tensor_parallel_size: {size}; use 1 or more")
    check_divisible(mcfg.num_heads, mcfg.num_kv_heads, mcfg.intermediate_size, size)
    if config.quantization is not None:
        raise ValueError(f"quantization: {config.quantization!r} is not supported with "
                         f"tensor_parallel_size {size}; use one or the other")
    device = pick_device(config, 0)
    if device.type == "cuda" and torch.cuda.device_count() < size:
        raise ValueError(f"tensor_parallel_size: {size} needs {size} GPUs; this host has "
                         f"{torch.cuda.device_count()}")


def _launch(spec: str | None, config: EngineConfig) -> None:
    global _followers
    from .tp_follower import main as follower_main

    size = config.tensor_parallel_size
    rendezvous = tempfile.mkdtemp(prefix="kvmesh-tp-")
    init_file = os.path.join(rendezvous, "group")
    threads = max(1, torch.get_num_threads() // size)
    ctx = multiprocessing.get_context("spawn")  # no forked CUDA or torch thread-pool state
    procs, plans = [], []
    for rank in range(1, size):
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=follower_main, name=f"kvmesh-tp-rank{rank}", daemon=True,
                           args=(rank, size, init_file, spec, config, recv, threads))
        _start_child(proc)
        recv.close()
        procs.append(proc)
        plans.append(send)
    _followers = _Followers(procs, plans, rendezvous)
    # Before multiprocessing's own exit hook, which would wait for followers that ignore the
    # SIGTERM it sends them (as the engine process does: see tp_follower.py).
    atexit.register(shutdown)
    threading.Thread(target=_watch, args=(_followers,), name="tp-watchdog", daemon=True).start()
    distributed.init(0, size, init_file, pick_device(config, 0))
    log.info("tensor parallelism: this process is rank 0 of %d", size)


def _start_child(proc: multiprocessing.process.BaseProcess) -> None:
    """Start `proc` even when this process is itself a daemon (the worker's engine process
    is one, so that it never outlives its worker). multiprocessing refuses children to a
    daemon to keep them from being orphaned; ours watch this process and exit with it."""
    me = multiprocessing.current_process()
    was = me._config.get("daemon")
    me._config["daemon"] = False
    try:
        proc.start()
    finally:
        me._config["daemon"] = was


def _watch(followers: _Followers) -> None:
    """Watchdog thread: a follower's death ends this process (see the module docstring)."""
    gone = wait([p.sentinel for p in followers.procs])
    if followers.stopping.is_set():
        return
    dead = next(p for p in followers.procs if p.sentinel in gone)
    dead.join(1)
    print(f"kvmesh engine: tensor-parallel {dead.name} exited (code {dead.exitcode}); "
          f"this engine cannot go on without it and exits", file=sys.stderr, flush=True)
    os._exit(RANK_DIED)


def send_plan(plan: object) -> None:
    """Hot path: once per step, to every follower."""
    assert _followers is not None, "no followers"
    for conn in _followers.plans:
        conn.send(plan)


def shutdown() -> None:
    """Stop the followers and leave the group; a no-op without them."""
    global _followers
    followers, _followers = _followers, None
    if followers is None:
        return
    followers.stopping.set()
    for conn in followers.plans:
        with contextlib.suppress(OSError, ValueError):
            conn.send(None)
            conn.close()
    for proc in followers.procs:
        proc.join(STOP_TIMEOUT_S)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
    distributed.destroy()
    shutil.rmtree(followers.rendezvous_dir, ignore_errors=True)
