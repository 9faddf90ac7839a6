"""A route whose caller goes away while a worker is being asked (a client that leaves a
gateway hosting its router cancels the route itself): a half-open circuit's trial is given
back, so the worker is offered again, not shut out for good. Real nats-server; the worker is
a subscriber that never answers."""

from __future__ import annotations

import asyncio

import nats

from kvmesh import wire
from kvmesh.cli import procs
from kvmesh.config import RouterConfig
from kvmesh.wire import GenerateRequest, Heartbeat
from router.service import Router
from router.tokenize import PromptTokenizer


async def test_a_cancelled_trial_leaves_the_worker_offered() -> None:
    port = procs.free_port()
    server = procs.start_nats(port)
    url = f"nats://127.0.0.1:{port}"
    router = Router(RouterConfig(nats_url=url, breaker_failures=1, breaker_cooldown=0.05,
                                 accept_timeout=30), PromptTokenizer(None))
    worker = await nats.connect(url)
    try:
        asked: asyncio.Queue[bytes] = asyncio.Queue()

        async def never_answer(msg: object) -> None:
            asked.put_nowait(msg.data)  # type: ignore[attr-defined]

        await worker.subscribe(wire.worker_generate("w0"), cb=never_answer)
        await worker.flush()
        await router.connect()
        router.workers.observe(Heartbeat("w0", "m", 0, 0, 0.1, 100, 90, max_model_len=64))
        router.breakers.failure("w0")  # open; half-open after the cool-down
        while router.breakers.state("w0") != "half-open":
            await asyncio.sleep(0.01)
        assert router.breakers.allows("w0")
        routing = asyncio.ensure_future(router.route(GenerateRequest(
            request_id="r1", model="m", reply_to="inbox", prompt_token_ids=[1, 2, 3]), None))
        await asyncio.wait_for(asked.get(), 10)  # the trial is out
        assert not router.breakers.allows("w0")
        routing.cancel()
        await asyncio.gather(routing, return_exceptions=True)
        assert router.breakers.allows("w0")
        assert router._routing == 0
    finally:
        await worker.close()
        await router.drain()
        server.stop()
