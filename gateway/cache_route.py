"""A cacheable request's result-cache lookup and its route, overlapped.

Contract (`open_cached(mesh, cache, req, rid, key_of, overlap)`, for a request whose answer may
be in the result cache under the key `key_of()` makes):
- Returns `Opened`: either `hit` (a stored answer) or `stream` (the request, routed and
  accepted by a worker), the `key`, and `lead` when the caller holds the key's single-flight
  lease and so must store the answer or release the lease (cache/client.py).
- With `overlap` (`GatewayConfig.cache_route_overlap`) the request is routed while the lookup is
  in flight, so a miss, the usual answer, costs no cache round trip before routing. The route
  leaves first: its request is on the wire before the key is made and the lookup sent (on an
  idle H100 host the two took 0.23 ms that the route used to wait for). The lookup then does
  not wait for another caller's lease (`CacheGet.wait` False), and its answer decides:
  - a miss: the routed stream answers (it keeps its chunks only when it leads);
  - a hit: the route is dropped and the hit answers, even if routing failed;
  - busy (an identical request is being computed): the route is dropped and the lookup asked
    again, waiting for that leader's answer as single-flight promises; a miss after the wait
    is routed anew, under the wire id `<rid>-2` (workers may remember the dropped id's cancel).
  A dropped route leaves no work behind: its stream is closed and a `Cancel` for it is
  published (a worker frees its slot and blocks at once, or refuses it if the cancel comes
  first). A worker may have run some of its prompt by then: the price of a hit, which usually
  finds its prompt's blocks still in the worker's prefix cache.
- Without `overlap`: the lookup (waiting), then the route on a miss.
- If the caller is cancelled or routing fails after the lookup gave it the lease, the lease is
  released; a route cancelled in flight is cancelled at the worker too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from cache.client import ResultCacheClient
from gateway.mesh_client import MeshClient, RequestStream
from gateway.openai_request import ParsedRequest
from kvmesh.wire import CacheHit, CacheMiss


@dataclass
class Opened:
    """Where the answer comes from: a stored `hit`, or a routed `stream`; its result-cache `key`;
    `lead`: store the answer under it."""

    hit: CacheHit | None
    stream: RequestStream | None
    key: str
    lead: bool


async def open_cached(mesh: MeshClient, cache: ResultCacheClient, req: ParsedRequest,
                      rid: str, key_of: Callable[[], str], overlap: bool) -> Opened:
    if not overlap:
        return await _then_route(mesh, cache, req, rid, key_of())
    route = asyncio.ensure_future(mesh.generate(req, rid, keep=True))
    try:
        await _let_leave()
        key = key_of()
        found = await cache.lookup(key, wait=False)
    except BaseException:
        _drop(mesh, route, rid)
        raise
    if isinstance(found, CacheHit):
        _drop(mesh, route, rid)
        return Opened(found, None, key, False)
    if found.busy:
        _drop(mesh, route, rid)
        return await _then_route(mesh, cache, req, f"{rid}-2", key)
    stream = await _routed(mesh, cache, route, rid, key, found)
    if not found.lead:
        stream.chunks = None  # nothing to store: keep no chunks
    return Opened(None, stream, key, found.lead)


async def _let_leave() -> None:
    """Yield once: the route's task, scheduled just before, runs up to its NATS publish, which
    writes the frame at once (kvmesh/nats_client.py)."""
    await asyncio.sleep(0)


async def _then_route(mesh: MeshClient, cache: ResultCacheClient, req: ParsedRequest,
                      wire_id: str, key: str) -> Opened:
    """Look up (waiting for a leader), then route on a miss."""
    found = await cache.lookup(key)
    if isinstance(found, CacheHit):
        return Opened(found, None, key, False)
    route = asyncio.ensure_future(mesh.generate(req, wire_id, keep=found.lead))
    return Opened(None, await _routed(mesh, cache, route, wire_id, key, found), key, found.lead)


async def _routed(mesh: MeshClient, cache: ResultCacheClient,
                  route: asyncio.Future[RequestStream], wire_id: str, key: str,
                  found: CacheMiss) -> RequestStream:
    """The stream `route` gives; its lease released if it fails or the caller is cancelled."""
    try:
        return await route
    except BaseException as exc:
        if found.lead:
            cache.release_soon(key)
        if isinstance(exc, asyncio.CancelledError):
            mesh.cancel_soon(wire_id)  # the router may have passed it on already
        raise


def _drop(mesh: MeshClient, route: asyncio.Future[RequestStream], wire_id: str) -> None:
    """Give up a route: close its stream (or stop it in flight) and cancel it at the worker."""
    if not route.done():
        route.cancel()  # RequestStream.route unregisters the stream
        # ... unless the cancel is lost: Python 3.11's `asyncio.wait_for` (under nats-py's
        # request) returns a reply that lands with the cancel, so the route may still give a
        # registered stream. Close whatever it gives.
        route.add_done_callback(_close_given)
    elif route.cancelled() or route.exception() is not None:
        return  # it never reached a worker that accepted it
    else:
        route.result().close()
    mesh.cancel_soon(wire_id, superseded=True)  # not a client that left: the cache answered


def _close_given(route: asyncio.Future[RequestStream]) -> None:
    if not route.cancelled() and route.exception() is None:
        route.result().close()
