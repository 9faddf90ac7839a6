"""The actor base against a real nats-server: bad frames get a clear error and never kill the
actor; oversize payloads are refused before publishing; timeouts and no-responders are typed."""

from __future__ import annotations

import asyncio

import nats
import pytest

from kvmesh import wire
from kvmesh.actor import Actor, NoResponders, NotConnected, PayloadTooLarge, RequestTimeout
from kvmesh.wire import Cancel, ErrorReply, Ping
from tests.integration.conftest import Mesh


async def test_undecodable_frame_gets_error_reply_and_router_survives(mesh: Mesh) -> None:
    nc = await nats.connect(mesh.nats_url)
    try:
        reply = await nc.request(wire.ROUTER_GENERATE, b"\xc1 not msgpack", timeout=5)
        err = wire.decode(reply.data, ErrorReply)
        assert err.status == 400 and err.code == "invalid_frame"
        wrong_kind = await nc.request(wire.ROUTER_GENERATE, wire.encode(Cancel("x")), timeout=5)
        message = wire.decode(wrong_kind.data, ErrorReply).message
        assert "expected a generate, embed message, got cancel" in message
        pong = await nc.request(wire.ROUTER_PING, wire.encode(Ping()), timeout=5)
        assert isinstance(wire.decode(pong.data), Ping)
    finally:
        await nc.close()


async def test_request_errors_are_typed(nats_url: str) -> None:
    actor = Actor("probe", nats_url)
    await actor.connect()
    try:
        with pytest.raises(NoResponders):
            await actor.request("kvmesh.nobody.home", Ping(), 1.0, Ping)
        await actor._client().subscribe("kvmesh.test.silent")  # hears, never answers
        with pytest.raises(RequestTimeout):
            await actor.request("kvmesh.test.silent", Ping(), 0.3, Ping)
        big = Cancel("x" * (actor._client().max_payload + 1))
        with pytest.raises(PayloadTooLarge):
            await actor.publish("kvmesh.test.big", big)
    finally:
        await actor.nc.close()


async def test_a_request_without_a_connection_fails_at_once(nats_url: str) -> None:
    """Not after its timeout: callers (auth, router, cache, responses) answer 503 now."""
    actor = Actor("probe", nats_url)
    with pytest.raises(NotConnected):  # never connected
        await asyncio.wait_for(actor.request("kvmesh.x", Ping(), 60.0, Ping), 5.0)
    await actor.connect()
    await actor.nc.close()
    with pytest.raises(NotConnected):  # the connection is gone
        await asyncio.wait_for(actor.request("kvmesh.x", Ping(), 60.0, Ping), 5.0)
