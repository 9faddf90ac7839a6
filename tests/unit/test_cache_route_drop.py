"""A dropped route leaves no stream registered, even when its cancel is lost (Python 3.11's
`asyncio.wait_for` returns a reply that lands together with the cancel)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from gateway.cache_route import _drop


class Stream:
    def __init__(self, mesh: SimpleNamespace, rid: str) -> None:
        self.mesh, self.rid = mesh, rid
        mesh.streams[rid] = self

    def close(self) -> None:
        self.mesh.streams.pop(self.rid, None)


async def _scenario(swallow: bool) -> SimpleNamespace:
    mesh = SimpleNamespace(streams={}, cancelled=[])
    mesh.cancel_soon = lambda rid, superseded=False: mesh.cancelled.append((rid, superseded))
    reply = asyncio.get_running_loop().create_future()

    async def route() -> Stream:
        stream = Stream(mesh, "r1")
        try:
            await reply
        except asyncio.CancelledError:
            if not swallow:
                stream.close()
                raise
        return stream  # the cancel was lost: the route still gives its stream

    task = asyncio.ensure_future(route())
    await asyncio.sleep(0)  # the route registered its stream and waits for the router
    _drop(mesh, task, "r1")
    for _ in range(3):
        await asyncio.sleep(0)
    assert task.done()
    return mesh


def test_a_dropped_route_whose_cancel_is_lost_closes_its_stream():
    mesh = asyncio.run(_scenario(swallow=True))
    assert mesh.streams == {} and mesh.cancelled == [("r1", True)]  # superseded: the cache answered


def test_a_dropped_route_cancelled_in_flight_closes_its_stream():
    mesh = asyncio.run(_scenario(swallow=False))
    assert mesh.streams == {} and mesh.cancelled == [("r1", True)]  # superseded: the cache answered
