"""The gateway's join of the mesh failing: at once (within the join wait), `serve` ends with the
error before opening its port; later (NATS answered after the port opened), the error is
logged and the gateway keeps answering until stopped."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway import server
from gateway.mesh_client import MeshClient
from kvmesh.cli import procs
from kvmesh.config import GatewayConfig


def _cfg() -> GatewayConfig:
    return GatewayConfig(auth=False, port=procs.free_port(), nats_url="nats://127.0.0.1:1")


async def test_a_join_that_fails_within_the_wait_ends_serve(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def refused(self: MeshClient) -> None:
        raise RuntimeError("subscription refused")

    monkeypatch.setattr(MeshClient, "start", refused)
    with pytest.raises(RuntimeError, match="subscription refused"):
        await asyncio.wait_for(server.serve(_cfg()), 10)


async def test_a_join_that_fails_after_the_port_opened_is_logged(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    async def late(self: MeshClient) -> None:
        await asyncio.sleep(0.3)
        raise RuntimeError("subscription refused")

    def said(text: str) -> bool:
        return any(text in r.getMessage() for r in caplog.records)

    async def until_said(text: str) -> None:
        while not said(text):
            await asyncio.sleep(0.01)

    monkeypatch.setattr(MeshClient, "start", late)
    monkeypatch.setattr(server, "JOIN_WAIT_S", 0.05)
    stop = asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="kvmesh.gateway"):
        serving = asyncio.ensure_future(server.serve(_cfg(), stop))
        await asyncio.wait_for(until_said("could not join the mesh"), 10)
        assert said("does not answer: serving 503")
        assert not serving.done()  # the port stays open, answering 503
        stop.set()
        await asyncio.wait_for(serving, 10)
