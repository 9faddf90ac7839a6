"""The router actor: tokenises, picks a worker, forwards, and retries before the first token.

Contract, for each `GenerateRequest` on `ROUTER_GENERATE` (queue group "router"):
- The prompt (chat messages through the model's chat template, or text) becomes token ids
  with the same tokenizer the worker's engine uses; a request that already has ids keeps them.
- A prompt longer than the model's context is answered 422 here, without a worker round trip.
- Workers serving the model are ranked by `router.policy.rank`; the router asks each in turn
  to accept (`accept_timeout`), moving on when a worker has no responders or times out. A
  worker's own refusal (an `ErrorReply` other than 503) goes back to the caller unchanged.
- The reply is the worker's `Accepted` (which names the worker, for cancels), or an
  `ErrorReply`: 404 for a model no worker serves, 503 with `retry_after` when no worker is
  live or none accepted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from kvmesh import wire
from kvmesh.actor import Actor, NoResponders, RemoteError, RequestTimeout
from kvmesh.config import RouterConfig, load
from kvmesh.wire import Accepted, ErrorReply, GenerateRequest, Heartbeat, Message, Ping
from router.policy import rank
from router.tokenize import PromptTokenizer
from router.workers import WorkerRegistry
from telemetry import routing as route_telemetry
from telemetry import setup as setup_telemetry
from telemetry import shutdown as shutdown_telemetry
from telemetry.tracing import traced

log = logging.getLogger("kvmesh.router")
INLINE_TOKENIZE_CHARS = 4096


class Router(Actor):
    def __init__(self, cfg: RouterConfig, tokenizer: PromptTokenizer) -> None:
        super().__init__("router", cfg.nats_url, cfg.grace_period)
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.workers = WorkerRegistry(cfg.worker_dead_after)

    async def start(self) -> None:
        await self.connect()
        await self.serve(wire.HEARTBEAT, (Heartbeat,), self._on_heartbeat)
        await self.serve(wire.ROUTER_GENERATE, (GenerateRequest,), self._generate,
                         queue="router", max_concurrency=self.cfg.max_concurrency)
        await self.serve(wire.ROUTER_PING, (Ping,), self._ping, queue="router")

    async def _on_heartbeat(self, msg: Message, raw: Any) -> None:
        assert isinstance(msg, Heartbeat)
        self.workers.observe(msg)

    async def _ping(self, msg: Message, raw: Any) -> Message:
        return Ping()

    def _unavailable(self, why: str) -> ErrorReply:
        return ErrorReply(503, "service_unavailable", why, code="no_worker",
                          retry_after=float(self.cfg.retry_after))

    @traced("router.route", observe=route_telemetry.observe_route)
    async def _generate(self, msg: Message, raw: Any) -> Message:
        req = msg
        assert isinstance(req, GenerateRequest)
        candidates = self.workers.live(req.model)
        route_telemetry.candidates(req, candidates)
        if not candidates:
            if self.workers.live() and req.model not in self.workers.models():
                return ErrorReply(404, "invalid_request_error",
                                  f"the model {req.model!r} does not exist", "model",
                                  "model_not_found")
            return self._unavailable(f"no live worker serves {req.model!r}")
        if req.prompt_token_ids is None:
            try:
                req.prompt_token_ids = await self._encode(req)
            except ValueError as exc:
                return ErrorReply(400, "invalid_request_error", str(exc), "messages")
            req.prompt = None
            req.messages = None
        limit = min(v.beat.max_model_len for v in candidates)
        n = len(req.prompt_token_ids)
        if limit and n >= limit:
            return ErrorReply(422, "invalid_request_error",
                              f"prompt has {n} tokens; this model's context is {limit}",
                              "messages", "context_length_exceeded")
        return await self._forward(req, candidates, raw.headers)

    async def _encode(self, req: GenerateRequest) -> list[int]:
        """Short prompts inline (a thread hop costs more than they do), long ones off the loop."""
        size = len(req.prompt or "") + sum(len(m.content) for m in req.messages or [])
        if size < INLINE_TOKENIZE_CHARS:
            return self.tokenizer.encode(req)
        return await asyncio.to_thread(self.tokenizer.encode, req)

    async def _forward(self, req: GenerateRequest, candidates: list[Any],
                       headers: dict[str, str] | None) -> Message:
        tried = 0
        for view in rank(candidates):
            if tried >= self.cfg.max_attempts:
                break
            tried += 1
            route_telemetry.attempt(req.model, tried)
            wid = view.beat.worker_id
            self.workers.sent(wid)
            try:
                return await self.request(wire.worker_generate(wid), req,
                                          self.cfg.accept_timeout, Accepted, headers=headers)
            except RemoteError as exc:
                if exc.reply.status != 503:
                    return exc.reply
                log.info("worker %s refused %s: %s", wid, req.request_id, exc)
            except (NoResponders, RequestTimeout) as exc:
                log.warning("worker %s did not accept %s: %s", wid, req.request_id, exc)
                self.workers.forget(wid)
        return self._unavailable(f"no worker accepted the request after {tried} attempt(s)")


async def serve(cfg: RouterConfig) -> None:
    tokenizer = await asyncio.to_thread(PromptTokenizer.load, cfg.model)
    router = Router(cfg, tokenizer)
    await router.start()
    await router.run_until_stopped()


def main(argv: Sequence[str] | None = None) -> int:
    cfg = load(RouterConfig, sys.argv[1:] if argv is None else argv)
    setup_telemetry("router", f"router-{os.getpid()}", cfg.log_level, cfg.metrics_port)
    try:
        asyncio.run(serve(cfg))
    finally:
        shutdown_telemetry()
    return 0


if __name__ == "__main__":
    sys.exit(main())
