"""An actor's drain when NATS dies with it.

`kvmesh up` killed (or a host going down) signals nats-server and every service at the same
moment: a service starts draining over a connection that is still up, and loses it a few
milliseconds later. Its drain must end then, not wait out its grace period for a PONG that
will never come (CI saw a gateway outlive its killed launcher that way)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from kvmesh.actor import Actor
from kvmesh.cli import procs
from tests.integration.private_mesh import start_nats

GRACE_S = 30.0


async def _drain_as_nats_dies(nats_port: int, nats: procs.Child) -> float:
    actor = Actor("drain-test", f"nats://127.0.0.1:{nats_port}", grace_period=GRACE_S)
    await actor.connect()

    async def ignore(_msg: object) -> None:
        return None

    assert actor.nc is not None
    for subject in ("a", "b"):
        actor._subs.append(await actor.nc.subscribe(subject, cb=ignore))
    await actor.nc.flush()
    nats.proc.kill()  # no await between this and the drain: it starts on a live connection
    assert actor.connected
    started = time.monotonic()
    await actor.drain()
    assert actor.nc.is_closed
    return time.monotonic() - started


def test_a_drain_ends_when_nats_dies_during_it(tmp_path: Path) -> None:
    port = procs.free_port()
    nats = start_nats(port, tmp_path)
    try:
        took = asyncio.run(_drain_as_nats_dies(port, nats))
    finally:
        nats.stop()
    # The connection's drain alone waited the whole grace period before the fix; what is left
    # is one bounded close (CLOSE_S) at most.
    assert took < GRACE_S / 3, took
