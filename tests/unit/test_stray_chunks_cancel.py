"""A cancel lost in a NATS restart (published as the gateway reconnected, before the workers
had subscribed again) must not leave the request running for nobody until `max_tokens`: the
gateway answers a chunk of a request it streams no more with a cancel at that worker, at
most once per `STRAY_S`, and none right behind its own cancel or after the request's last
chunk. Real nats-server; the worker is a test connection publishing `Deltas` frames."""

from __future__ import annotations

import asyncio

import nats
import pytest

from gateway import mesh_client
from gateway.mesh_client import MeshClient
from kvmesh import wire
from kvmesh.cli import procs
from kvmesh.config import GatewayConfig
from kvmesh.wire import Cancel, Chunk, Deltas, UsageInfo


async def test_a_stray_chunk_cancels_its_request_at_its_worker_once_per_interval(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mesh_client, "STRAY_S", 2.0)  # far above a loaded CI's frame gap
    port = procs.free_port()
    server = procs.start_nats(port)
    url = f"nats://127.0.0.1:{port}"
    mesh = MeshClient(GatewayConfig(nats_url=url))
    worker = await nats.connect(url)
    try:
        cancels: asyncio.Queue[Cancel] = asyncio.Queue()

        async def on_cancel(msg: object) -> None:
            cancels.put_nowait(wire.decode(msg.data, Cancel))  # type: ignore[attr-defined]

        await worker.subscribe(wire.CANCEL, cb=on_cancel)
        await worker.flush()
        await mesh.start()

        async def send(request_id: str, seq: int, last: bool = False) -> None:
            usage = UsageInfo(1, seq + 1, 0) if last else None
            frame = Deltas("w7", [Chunk(request_id, seq, 0, "x", [seq], usage=usage)])
            await worker.publish(mesh.inbox, wire.encode(frame))
            await worker.flush()

        await send("lost", 5)
        got = await asyncio.wait_for(cancels.get(), 10)
        assert (got.request_id, got.worker_id, got.superseded) == ("lost", "w7", False)
        await send("lost", 6)  # within STRAY_S of the first: no second cancel yet
        await mesh.cancel("left")  # the gateway's own cancel, then its frames in flight
        assert (await asyncio.wait_for(cancels.get(), 10)).request_id == "left"
        await send("left", 9)
        await send("done", 3, last=True)  # a request's last chunk: nothing runs any more
        await send("probe", 1)  # cancelled after whatever the frames before it caused
        assert (await asyncio.wait_for(cancels.get(), 10)).request_id == "probe"
        assert cancels.empty()
        await asyncio.sleep(2.05)  # STRAY_S on: a request still running is cancelled again
        await send("lost", 7)
        assert (await asyncio.wait_for(cancels.get(), 10)).request_id == "lost"
    finally:
        await worker.close()
        await mesh.drain()
        server.stop()
