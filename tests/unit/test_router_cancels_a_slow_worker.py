"""A worker that does not accept in time (paused) may take the request later: the router,
moving on to the next worker, sends a `Cancel` naming the slow one only, so it drops the
request on arrival and never runs it beside the worker that took it. Real nats-server; the
slow worker never answers, the other accepts."""

from __future__ import annotations

import asyncio

import nats

from kvmesh import wire
from kvmesh.cli import procs
from kvmesh.config import RouterConfig
from kvmesh.wire import Accepted, Cancel, GenerateRequest, Heartbeat
from router.service import Router
from router.tokenize import PromptTokenizer


async def test_the_slow_worker_is_told_to_cancel_and_the_other_keeps_it() -> None:
    port = procs.free_port()
    server = procs.start_nats(port)
    url = f"nats://127.0.0.1:{port}"
    router = Router(RouterConfig(nats_url=url, accept_timeout=0.3, retry_backoff=0.01),
                    PromptTokenizer(None))
    mesh = await nats.connect(url)
    try:
        cancels: asyncio.Queue[Cancel] = asyncio.Queue()

        async def slow(msg) -> None:  # paused: never answers
            return None

        async def quick(msg) -> None:
            req = wire.decode(msg.data, wire.TokenizedRequest)
            await msg.respond(wire.encode(Accepted(req.request_id, "w1", 3)))

        async def on_cancel(msg) -> None:
            cancels.put_nowait(wire.decode(msg.data, Cancel))

        await mesh.subscribe(wire.worker_generate("w0"), cb=slow)
        await mesh.subscribe(wire.worker_generate("w1"), cb=quick)
        await mesh.subscribe(wire.CANCEL, cb=on_cancel)
        await mesh.flush()
        await router.connect()
        for wid, load in (("w0", 0), ("w1", 5)):  # w0 ranks first: less loaded
            router.workers.observe(Heartbeat(wid, "m", load, 0, 0.1, 100, 90,
                                             max_model_len=64))
        reply = await router.route(GenerateRequest(
            request_id="r1", model="m", reply_to="inbox", prompt_token_ids=[1, 2, 3]), None)
        assert isinstance(reply, Accepted) and reply.worker_id == "w1"
        cancel = await asyncio.wait_for(cancels.get(), 5)
        assert (cancel.request_id, cancel.worker_id) == ("r1", "w0")
        assert cancels.empty()  # none for w1, which has it
    finally:
        await mesh.close()
        await router.drain()
        server.stop()
