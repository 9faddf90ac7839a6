"""A request received before nats-server restarted is still answered after it: `allow_responses`
knows only the requests the running server delivered, so router, auth and cache may publish
to `_INBOX.>` too (kvmesh/cli/nats_permissions.py). Without it, a result-cache lookup waiting
on its leader across a restart was refused its reply and waited out `cache_lead_wait` (60 s).
Real nats-server with `kvmesh up`'s generated users and permissions, restarted on its port."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path

import nats
import pytest

from kvmesh import wire
from kvmesh.cli import local_nats, procs


def _server(nats_cfg: local_nats.LocalNats, log: Path) -> procs.Child:
    child = procs.start("nats", [procs.nats_server_binary(), "-c", str(nats_cfg.config)],
                        env=nats_cfg.server_env(), log=open(log, "ab"))  # noqa: SIM115
    procs.wait_port(nats_cfg.port, 10, child.proc)
    return child


@pytest.mark.parametrize("role,subject", [("cache", wire.CACHE_GET), ("router", wire.ROUTER_PING),
                                          ("auth", wire.AUTH_ADMIT)])
async def test_a_reply_to_a_request_from_before_a_restart_reaches_its_caller(
        tmp_path: Path, role: str, subject: str) -> None:
    cfg = local_nats.prepare(tmp_path, procs.free_port())
    server = _server(cfg, tmp_path / "nats.log")
    back = {"responder": asyncio.Event(), "caller": asyncio.Event()}

    def connect(url: str, name: str) -> Awaitable[nats.NATS]:
        async def reconnected() -> None:
            back[name].set()
        return nats.connect(url, reconnect_time_wait=0.1, max_reconnect_attempts=-1,
                            reconnected_cb=reconnected)

    responder = await connect(cfg.url(role), "responder")
    caller = await connect(cfg.url("gateway"), "caller")
    try:
        received: asyncio.Queue[nats.aio.msg.Msg] = asyncio.Queue()

        async def hold(msg: nats.aio.msg.Msg) -> None:
            received.put_nowait(msg)  # answered later, after the restart

        await responder.subscribe(subject, cb=hold)
        await responder.flush()
        asking = asyncio.ensure_future(caller.request(subject, b"?", timeout=30))
        msg = await asyncio.wait_for(received.get(), 10)
        server.stop()
        server = _server(cfg, tmp_path / "nats.log")
        for conn, name in ((responder, "responder"), (caller, "caller")):
            await asyncio.wait_for(back[name].wait(), 20)  # the caller's inbox subscribed again
            await conn.flush()
        await msg.respond(b"!")
        assert (await asyncio.wait_for(asking, 10)).data == b"!"
    finally:
        await caller.close()
        await responder.close()
        server.stop()
