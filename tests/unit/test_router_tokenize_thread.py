"""Where the router tokenizes a prompt (`RouterConfig.inline_tokenize_chars`): a tiny one on
its loop, and one of ordinary size while it routes nothing else; the rest in a thread, so the
loop goes on routing the others meanwhile. The ids are the same either way."""

from __future__ import annotations

import threading

from kvmesh.config import RouterConfig
from kvmesh.wire import GenerateRequest
from router.service import Router
from router.tokenize import PromptTokenizer


class _Recording:
    """A tokenizer that notes which thread encoded."""

    def __init__(self) -> None:
        self.threads: list[str] = []

    def encode(self, text: str) -> list[int]:
        self.threads.append(threading.current_thread().name)
        return [len(w) for w in text.split()]


def _router(limit: int, routing: int = 2) -> tuple[Router, _Recording]:
    """`routing`: requests being routed, the one tokenized here included."""
    tok = _Recording()
    router = Router(RouterConfig(inline_tokenize_chars=limit), PromptTokenizer(tok))
    router._routing = routing
    return router, tok


def _req(prompt: str) -> GenerateRequest:
    return GenerateRequest("cmpl-1", "m", "inbox", prompt=prompt)


async def test_a_tiny_prompt_is_tokenized_on_the_loop() -> None:
    router, tok = _router(256)
    assert await router._encode(_req("a tiny prompt")) == [1, 4, 6]
    assert tok.threads == [threading.current_thread().name]


async def test_a_longer_prompt_is_tokenized_in_a_thread_while_others_are_routed() -> None:
    router, tok = _router(256)
    prompt = "word " * 100  # 500 characters
    assert await router._encode(_req(prompt)) == [4] * 100
    assert tok.threads != [threading.current_thread().name]


async def test_a_longer_prompt_routed_alone_is_tokenized_on_the_loop() -> None:
    router, tok = _router(256, routing=1)
    assert await router._encode(_req("word " * 100)) == [4] * 100
    assert tok.threads == [threading.current_thread().name]


async def test_a_huge_prompt_routed_alone_still_goes_to_a_thread() -> None:
    """Past `IDLE_INLINE_CHARS` the loop would be held too long, idle or not."""
    from router.service import IDLE_INLINE_CHARS

    router, tok = _router(256, routing=1)
    words = IDLE_INLINE_CHARS // 5 + 1
    assert await router._encode(_req("word " * words)) == [4] * words
    assert tok.threads != [threading.current_thread().name]


async def test_the_count_of_requests_being_routed_follows_the_handler() -> None:
    """`route` counts itself in while it runs and out however it ends (here: no worker)."""
    from kvmesh.wire import ErrorReply

    router, _ = _router(256, routing=0)
    seen: list[int] = []
    real = router._route

    async def route(req, headers):  # type: ignore[no-untyped-def]
        seen.append(router._routing)
        return await real(req, headers)

    router._route = route  # type: ignore[method-assign]
    answer = await router.route(_req("word " * 100), None)
    assert isinstance(answer, ErrorReply) and answer.status == 503
    assert seen == [1] and router._routing == 0


async def test_zero_sends_every_prompt_to_a_thread() -> None:
    router, tok = _router(0)
    assert await router._encode(_req("hi")) == [2]
    assert tok.threads != [threading.current_thread().name]
