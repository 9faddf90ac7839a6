"""Which workers may take a generation, by their contexts (router/service.py): a request
without `max_tokens` runs to its context's end, so it goes to the widest context that holds
it, never to a smaller one that would cut it short (RELIABILITY round eleven, row 10)."""

from __future__ import annotations

from typing import Any

from kvmesh.config import RouterConfig
from kvmesh.wire import GenerateRequest, Heartbeat
from router.service import Router
from router.tokenize import PromptTokenizer


async def _chosen(max_tokens: int | None, prompt: int = 10) -> list[str]:
    router = Router(RouterConfig(), PromptTokenizer(None))
    for wid, ctx in (("wide", 8192), ("wide2", 8192), ("narrow", 128)):
        router.workers.observe(Heartbeat(wid, "m", 0, 0, 0.1, 100, 90, max_model_len=ctx))
    chosen: list[str] = []

    async def forward(req: Any, fitting: list[Any], *rest: Any) -> None:
        chosen.extend(sorted(v.beat.worker_id for v in fitting))

    router._forward = forward  # type: ignore[method-assign]
    await router.route(GenerateRequest("r1", "m", "inbox", prompt_token_ids=[1] * prompt,
                                       max_tokens=max_tokens), None)
    return chosen


async def test_without_max_tokens_only_the_widest_context_takes_it() -> None:
    assert await _chosen(None) == ["wide", "wide2"]


async def test_with_max_tokens_every_context_that_holds_it_may() -> None:
    assert await _chosen(100) == ["narrow", "wide", "wide2"]
    assert await _chosen(200) == ["wide", "wide2"]
