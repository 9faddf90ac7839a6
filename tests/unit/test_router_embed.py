"""The router's refusals of an embedding request, decided before any worker is asked."""

from __future__ import annotations

import time

from kvmesh.config import RouterConfig
from kvmesh.wire import EmbedRequest, ErrorReply, Heartbeat
from kvmesh.worker_registry import WorkerView
from router.service import Router
from router.tokenize import PromptTokenizer


def view(wid: str, pooling: str, ctx: int = 64) -> WorkerView:
    beat = Heartbeat(wid, "m", 0, 0, 0.1, 100, 90, max_model_len=ctx, pooling=pooling)
    return WorkerView(beat, time.monotonic())


def embed(inputs: list[list[int]]) -> EmbedRequest:
    return EmbedRequest("embd-1", "m", "inbox", input_token_ids=inputs)


async def test_a_model_whose_workers_do_not_pool_is_400_model_not_embedding() -> None:
    router = Router(RouterConfig(), PromptTokenizer(None))
    reply = await router._embed(embed([[1, 2]]), [view("a", ""), view("b", "")], None)
    assert isinstance(reply, ErrorReply)
    assert (reply.status, reply.param, reply.code) == (400, "model", "model_not_embedding")


async def test_an_input_over_every_context_is_400_naming_it() -> None:
    router = Router(RouterConfig(), PromptTokenizer(None))
    reply = await router._embed(embed([[1] * 10, [2] * 64]), [view("a", "last", ctx=64)], None)
    assert isinstance(reply, ErrorReply)
    assert (reply.status, reply.param, reply.code) == (400, "input", "context_length_exceeded")
    assert "input[1] has 64 tokens" in reply.message
