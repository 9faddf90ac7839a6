"""Where the router tokenizes a prompt (`RouterConfig.inline_tokenize_chars`): a tiny one on
its loop, the rest in a thread, so the loop goes on routing meanwhile; the ids are the same."""

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


def _router(limit: int) -> tuple[Router, _Recording]:
    tok = _Recording()
    return Router(RouterConfig(inline_tokenize_chars=limit), PromptTokenizer(tok)), tok


def _req(prompt: str) -> GenerateRequest:
    return GenerateRequest("cmpl-1", "m", "inbox", prompt=prompt)


async def test_a_tiny_prompt_is_tokenized_on_the_loop() -> None:
    router, tok = _router(256)
    assert await router._encode(_req("a tiny prompt")) == [1, 4, 6]
    assert tok.threads == [threading.current_thread().name]


async def test_a_longer_prompt_is_tokenized_in_a_thread_to_the_same_ids() -> None:
    router, tok = _router(256)
    prompt = "word " * 100  # 500 characters
    assert await router._encode(_req(prompt)) == [4] * 100
    assert tok.threads != [threading.current_thread().name]


async def test_zero_sends_every_prompt_to_a_thread() -> None:
    router, tok = _router(0)
    assert await router._encode(_req("hi")) == [2]
    assert tok.threads != [threading.current_thread().name]
