"""A worker whose engine process is paused (SIGSTOP: alive, not stepping) while it holds a
request stops its heartbeats within `engine_stall_timeout` and refuses new requests with 503
`engine_stalled`, so the mesh counts it dead and sends it nothing; resumed, it beats again and
finishes what it held (inference/engine_watch.py). An idle one is probed, so its paused engine
takes it out before any request is sent to it. A real worker and engine process, real
NATS, requests sent to the worker as a router sends them."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from pathlib import Path

import nats
import pytest

from kvmesh import wire
from kvmesh.cli import procs
from kvmesh.wire import Accepted, Deltas, ErrorReply, Heartbeat, TokenizedRequest
from tests.integration.conftest import MAX_MODEL_LEN, MODEL
from tests.integration.helpers import engine_pid

STALL_S = 1.0


def _start(nats_url: str, worker_id: str, logs: Path) -> procs.Child:
    return procs.start(worker_id, procs.service_argv("worker"), env={
        "KVMESH_NATS_URL": nats_url, "KVMESH_WORKER_WORKER_ID": worker_id,
        "KVMESH_WORKER_TORCH_THREADS": "1", "KVMESH_WORKER_MAX_MODEL_LEN": str(MAX_MODEL_LEN),
        "KVMESH_WORKER_NUM_KV_BLOCKS": "64", "KVMESH_WORKER_METRICS_PORT": "0",
        "KVMESH_WORKER_ENGINE_STALL_TIMEOUT": str(STALL_S)},
        log=open(logs / f"{worker_id}.log", "ab"))


async def _scenario(nats_url: str, worker_id: str, pid: int, idle: bool) -> None:
    nc = await nats.connect(nats_url)
    beats: list[float] = []
    deltas: asyncio.Queue[Deltas] = asyncio.Queue()

    async def on_beat(msg) -> None:
        if wire.decode(msg.data, Heartbeat).worker_id == worker_id:
            beats.append(time.monotonic())

    async def on_delta(msg) -> None:
        deltas.put_nowait(wire.decode(msg.data, Deltas))

    inbox = nc.new_inbox()
    await nc.subscribe(wire.HEARTBEAT, cb=on_beat)
    await nc.subscribe(inbox, cb=on_delta)

    async def send(rid: str) -> Accepted | ErrorReply:
        req = TokenizedRequest(request_id=rid, model=MODEL, reply_to=inbox,
                               prompt_token_ids=[1, 2, 3, 4], max_tokens=4, temperature=0.0)
        reply = await nc.request(wire.worker_generate(worker_id), wire.encode(req), timeout=10)
        return wire.decode(reply.data, Accepted, ErrorReply)

    async def until(cond, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.05)

    await until(lambda: beats, 120, "the worker never beat")
    engine = engine_pid(pid)
    os.kill(engine, signal.SIGSTOP)
    try:
        if not idle:
            assert isinstance(await send("held"), Accepted)  # the worker takes it; no step
        held_at = time.monotonic()
        await until(lambda: beats and time.monotonic() - beats[-1] > 1.5, 10,
                    "heartbeats went on while the engine was paused")
        assert beats[-1] - held_at < 1.5 * STALL_S + 4.0  # they stopped near the timeout
        refused = await send("new")
        assert isinstance(refused, ErrorReply) and refused.status == 503
        assert refused.code == "engine_stalled"
    finally:
        os.kill(engine, signal.SIGCONT)
    resumed_at = time.monotonic()
    await until(lambda: beats[-1] > resumed_at, 10, "no heartbeat after the engine resumed")
    assert isinstance(await send("after"), Accepted)
    done: set[str] = set()
    while done != ({"after"} if idle else {"held", "after"}):
        frame = await asyncio.wait_for(deltas.get(), 30)
        done |= {c.request_id for c in frame.chunks if c.usage is not None}
    await nc.close()


@pytest.mark.parametrize("idle", [False, True], ids=["holding", "idle"])
def test_a_paused_engine_takes_its_worker_out_until_it_steps_again(
        nats_url: str, logs_dir: Path, idle: bool) -> None:
    worker_id = f"stall-{uuid.uuid4().hex[:6]}"
    child = _start(nats_url, worker_id, logs_dir)
    try:
        asyncio.run(_scenario(nats_url, worker_id, child.proc.pid, idle))
    finally:
        child.stop()
