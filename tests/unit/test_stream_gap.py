"""A chunk lost in transit (core NATS delivers at most once; a frame in flight when NATS
restarts is gone) fails its stream within `GAP_GRACE_S` with 502 `stream_gap`: the later
chunks held behind it are never delivered out of order, and the client does not wait for the
60 s `chunk_timeout` to hear a false "sent nothing" (gateway/mesh_client.py). A stream takes
chunks and errors only from the worker that accepted its request: one the request was sent to
before (paused, then resumed) never mixes its output in, and a re-route cancels the request
there."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.errors import ApiError
from gateway.mesh_client import GAP_GRACE_S, MeshClient, RequestStream
from kvmesh.config import GatewayConfig
from kvmesh.wire import Accepted, Chunk, GenerateRequest, UsageInfo


def _stream() -> RequestStream:
    stream = RequestStream(MeshClient(GatewayConfig()),
                           GenerateRequest(request_id="r", model="m", reply_to="inbox"), False)
    stream.accepted = Accepted("r", "w0", 1)
    return stream


def _chunk(seq: int, last: bool = False) -> Chunk:
    return Chunk("r", seq, 0, f"t{seq}", [seq], usage=UsageInfo(1, seq + 1, 0) if last else None)


def _texts(stream: RequestStream) -> list[str]:
    return [c.text for c in asyncio.run(stream.batch())]


def test_a_late_chunk_fills_its_gap_within_the_grace() -> None:
    stream = _stream()
    stream.push(_chunk(0), "w0")
    stream.push(_chunk(2), "w0")
    assert _texts(stream) == ["t0"]  # t2 waits for t1
    stream.check(time.monotonic() + GAP_GRACE_S / 2)
    stream.push(_chunk(1), "w0")
    stream.push(_chunk(3, last=True), "w0")
    stream.check(time.monotonic() + 2 * GAP_GRACE_S)  # no gap left: nothing to fail
    assert _texts(stream) == ["t1", "t2", "t3"] and stream.completed


def test_a_chunk_that_never_comes_fails_the_stream_with_stream_gap() -> None:
    stream = _stream()
    stream.push(_chunk(0), "w0")
    assert _texts(stream) == ["t0"]
    stream.push(_chunk(2), "w0")
    stream.push(_chunk(3), "w0")
    stream.check(time.monotonic() + GAP_GRACE_S + 0.1)
    with pytest.raises(ApiError) as err:
        asyncio.run(stream.batch())
    assert (err.value.status, err.value.code) == (502, "stream_gap")
    assert "chunk 1 never came" in err.value.message


class _NextWorker:
    """A hosted router (gateway/mesh_client.py `LocalRouter`) that sends every request to
    worker w1: what the real one answers once w0 is excluded."""

    connected = True

    async def start(self) -> None: ...

    async def route(self, req: GenerateRequest, headers: dict[str, str] | None) -> Accepted:
        assert req.exclude_workers == ["w0"]  # the dead worker is not chosen again
        return Accepted(req.request_id, "w1", 1)

    async def drain(self) -> None: ...


def test_a_reroute_drops_the_chunks_held_from_the_dead_worker() -> None:
    """w0 sent chunk 1 (its chunk 0 was lost) and died: the request goes to w1, whose chunks
    number from 0 again. w0's held chunk 1 must not be handed out after w1's chunk 0."""

    async def run() -> list[str]:
        stream = RequestStream(
            MeshClient(GatewayConfig(retry_before_first_token=1), _NextWorker()),
            GenerateRequest(request_id="r", model="m", reply_to="inbox"), False)
        stream.accepted = Accepted("r", "w0", 1)
        stream.push(Chunk("r", 1, 0, "dead", [1]), "w0")
        stream.fail(ApiError(502, "worker w0 died", "bad_gateway", code="worker_died"))
        first = asyncio.ensure_future(stream.batch())
        while stream.worker_id != "w1":
            await asyncio.sleep(0)
        stream.push(Chunk("r", 0, 0, "w0-late", [0]), "w0")  # w0 was only paused
        stream.push(Chunk("r", 0, 0, "w1-0", [0]), "w1")
        texts = [c.text for c in await asyncio.wait_for(first, 5)]
        stream.push(Chunk("r", 1, 0, "w1-1", [1], usage=UsageInfo(1, 2, 0)), "w1")
        return texts + [c.text for c in await asyncio.wait_for(stream.batch(), 5)]

    assert asyncio.run(run()) == ["w1-0", "w1-1"]


class _Cancels(MeshClient):
    """The mesh client, its cancels recorded instead of published (no NATS here)."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.sent: list[tuple[str, str]] = []

    def cancel_soon(self, request_id: str, superseded: bool = False,
                    worker_id: str = "") -> None:
        self.sent.append((request_id, worker_id))


def test_a_reroute_cancels_the_request_at_the_worker_it_left() -> None:
    async def run() -> _Cancels:
        mesh = _Cancels(GatewayConfig(retry_before_first_token=1), _NextWorker())
        stream = RequestStream(mesh, GenerateRequest(request_id="r", model="m",
                                                     reply_to="inbox"), False)
        stream.accepted = Accepted("r", "w0", 1)
        stream.fail(ApiError(502, "worker w0 died", "bad_gateway", code="worker_died"))
        first = asyncio.ensure_future(stream.batch())
        while stream.worker_id != "w1":
            await asyncio.sleep(0)
        stream.push(Chunk("r", 0, 0, "w1-0", [0], usage=UsageInfo(1, 1, 0)), "w1")
        await asyncio.wait_for(first, 5)
        return mesh

    assert asyncio.run(run()).sent == [("r", "w0")]  # w0 only: w1 has it now


def test_only_the_accepting_workers_chunks_and_errors_count() -> None:
    stream = _stream()  # accepted by w0
    stream.push(_chunk(0), "w9")  # a worker the request was sent to before, come back
    stream.fail(ApiError(502, "w9 broke", "bad_gateway"), "w9")
    stream.push(_chunk(0), "w0")
    stream.push(_chunk(1, last=True), "w0")
    assert _texts(stream) == ["t0", "t1"] and stream.completed


class _EarlyDeltas:
    """A hosted router during whose routing both the worker it gave up on (w0) and the one
    that accepts (w1) send chunk 0: they overtake the Accepted."""

    connected = True
    stream: RequestStream

    async def start(self) -> None: ...

    async def route(self, req: GenerateRequest, headers: dict[str, str] | None) -> Accepted:
        self.stream.push(Chunk("r", 0, 0, "from-w0", [0]), "w0")
        self.stream.push(Chunk("r", 0, 0, "from-w1", [0], usage=UsageInfo(1, 1, 0)), "w1")
        return Accepted(req.request_id, "w1", 1)

    async def drain(self) -> None: ...


def test_chunks_that_overtake_the_accepted_are_sorted_by_it() -> None:
    async def run() -> list[str]:
        router = _EarlyDeltas()
        stream = RequestStream(MeshClient(GatewayConfig(), router),
                               GenerateRequest(request_id="r", model="m", reply_to="inbox"),
                               False)
        router.stream = stream
        await stream.route()
        return [c.text for c in await asyncio.wait_for(stream.batch(), 5)]

    assert asyncio.run(run()) == ["from-w1"]
