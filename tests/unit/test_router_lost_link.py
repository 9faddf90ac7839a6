"""The router without a NATS connection: a clean 503, and no worker blamed for it."""

from __future__ import annotations

import time

from kvmesh.config import RouterConfig
from kvmesh.wire import ErrorReply, Heartbeat, TokenizedRequest
from kvmesh.worker_registry import WorkerView
from router.service import Router
from router.tokenize import PromptTokenizer


async def test_a_router_that_lost_nats_answers_503_and_keeps_its_workers() -> None:
    router = Router(RouterConfig(), PromptTokenizer(None))  # never connected
    beat = Heartbeat("w0", "m", 0, 0, 0.1, 100, 90, max_model_len=64)
    router.workers.observe(beat)
    req = TokenizedRequest(request_id="r1", model="m", reply_to="inbox",
                           prompt_token_ids=[1, 2, 3])
    reply = await router._forward(req, [WorkerView(beat, time.monotonic())], "", None)
    assert isinstance(reply, ErrorReply) and reply.status == 503
    assert "lost NATS" in reply.message
    assert [v.beat.worker_id for v in router.workers.live()] == ["w0"]  # not forgotten
    assert router.breakers.state("w0") == "closed"
