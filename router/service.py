"""The router actor: tokenises, picks a worker, forwards, and retries before the first token.

Contract, for each `GenerateRequest` on `ROUTER_GENERATE` (queue group "router"):
- The prompt (chat messages through the model's chat template, or text) becomes token ids
  with the same tokenizer the worker's engine uses; a request that already has ids keeps them.
  Workers get a `TokenizedRequest`.
- The context check lives here: only workers whose own context holds the prompt (plus
  `max_tokens`, when given) are candidates, and for a request without `max_tokens` (it runs
  to its context's end) only those of the widest such context; when none does, the answer is 400
  `context_length_exceeded`, without a worker round trip, unless the request may be
  truncated (`truncate`, chat messages): then its oldest turns are dropped until it fits
  (router/truncation.py), and only a conversation whose last turn alone does not fit is
  refused. Before that check, `truncate_prompt_tokens` keeps the prompt's (each embedding
  input's) last tokens, sized on the largest context of the model's workers; a size over
  that context is a 400 naming it.
- Workers serving the model (live by heartbeat, circuit closed, not in `exclude_workers`) are
  ranked by the configured `router.policy` using the KV index (`router.kv_index`, fed by the
  workers' KV events and the prompts it sent them; a fresh router and a reappearing worker
  trigger a `KVResync`). The router asks each in turn to accept (`accept_timeout`), with
  backoff and jitter between tries, moving on when a worker has no responders, times out or
  refuses with 503 (each counts against its circuit breaker, `router.health`). Another
  refusal goes back to the caller unchanged. A worker that timed out may still take the
  request later (a paused process): it gets a `Cancel` naming it, so it drops the request on
  arrival and never runs it beside the worker that took it on (its output would reach the
  same gateway; the gateway keeps only the accepting worker's, gateway/mesh_client.py).
- `Accepted.prefix_overlap` carries the cached prefix blocks the router counted on.
- An `EmbedRequest` (same subject) is tokenised input by input into a `TokenizedEmbed` and
  routed the same way among the workers whose heartbeat declares a pooling (400
  `model_not_embedding` when none does; 400 `context_length_exceeded` naming the input when
  one is longer than every such worker's context); its first input's prefix scores overlap.
  A worker's refusal of its token ids (the engine's prompt check names `prompt`) is renamed
  to `input`, the field the caller sent them in.
- The reply is the worker's `Accepted` (which names the worker, for cancels), or an
  `ErrorReply`: 404 for a model no worker serves, 503 with `retry_after` when no worker is
  live or none accepted.

`TokenizeRequest` on `ROUTER_TOKENIZE` and `DetokenizeRequest` on `ROUTER_DETOKENIZE` (the
gateway's `/tokenize`, `/detokenize`) are answered here with the same tokenizer, for a model a
live worker serves (404 or 503 as above); the reply's `max_model_len` is the largest context
of the model's live workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from kvmesh import wire
from kvmesh.actor import (
    Actor,
    NoResponders,
    NotConnected,
    PayloadTooLarge,
    RemoteError,
    RequestTimeout,
)
from kvmesh.block_hash import BlockHash, hash_prefix_blocks
from kvmesh.config import RouterConfig, load
from kvmesh.wire import (
    Accepted,
    Cancel,
    DetokenizeReply,
    DetokenizeRequest,
    EmbedRequest,
    ErrorReply,
    GenerateRequest,
    Heartbeat,
    KVEvent,
    KVResync,
    Message,
    Ping,
    TokenizedEmbed,
    TokenizedRequest,
    TokenizeReply,
    TokenizeRequest,
)
from kvmesh.worker_registry import WorkerRegistry, WorkerView
from router import telemetry as route_telemetry
from router.health import Breakers, backoff
from router.kv_index import KVIndex
from router.policy import Candidate, Policy, PolicyParams, is_overloaded
from router.tokenize import PromptTokenizer
from router.truncation import tail_size, truncate
from telemetry import propagation, run_service
from telemetry.tracing import traced

log = logging.getLogger("kvmesh.router")
# While the router routes nothing else, texts up to this many characters (about 2,000 tokens,
# well under a millisecond to tokenize) are tokenized on its loop too: the thread hop would cost
# ~0.3 ms that nothing gains back. A longer one goes to the thread anyway, so a huge prompt or
# batch of embedding inputs never holds the loop (and the requests arriving meanwhile) long.
IDLE_INLINE_CHARS = 8192
PRUNE_EVERY_S = 10.0  # how often the router drops the state of workers gone for good


class Router(Actor):
    def __init__(self, cfg: RouterConfig, tokenizer: PromptTokenizer) -> None:
        super().__init__("router", cfg.nats_url, cfg.grace_period, propagation)
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.workers = WorkerRegistry(cfg.worker_dead_after)
        self.policy = Policy(cfg.policy, PolicyParams(
            cfg.kv_load_weight, cfg.overload_queue, cfg.overload_kv_usage, cfg.affinity_bonus))
        self.kv_index = KVIndex()
        self.breakers = Breakers(cfg.breaker_failures, cfg.breaker_cooldown)
        self._resync_asked: dict[str, float] = {}
        self._routing = 0  # generate and embed requests being handled now
        self._heard: dict[str, float] = {}  # worker id -> its last heartbeat (monotonic)
        self._pruned_at = time.monotonic()

    async def start(self) -> None:
        await self.connect()
        route_telemetry.watch_workers(self.workers.live_count)
        await self.serve(wire.KV_EVENTS, (KVEvent,), self._on_kv_event)
        await self.serve(wire.HEARTBEAT, (Heartbeat,), self._on_heartbeat, polls=False)
        await self.publish(wire.KV_RESYNC, KVResync())  # a fresh router rebuilds its index
        await self.serve(wire.ROUTER_GENERATE, (GenerateRequest, EmbedRequest), self._generate,
                         queue="router", max_concurrency=self.cfg.max_concurrency)
        await self.serve(wire.ROUTER_PING, (Ping,), self._ping, queue="router")
        await self.serve(wire.ROUTER_TOKENIZE, (TokenizeRequest,), self._tokenize,
                         queue="router")
        await self.serve(wire.ROUTER_DETOKENIZE, (DetokenizeRequest,), self._detokenize,
                         queue="router")

    async def _on_heartbeat(self, msg: Message, raw: Any) -> None:
        assert isinstance(msg, Heartbeat)
        wid = msg.worker_id
        was_live = self.workers.is_live(wid)
        if not self.workers.observe(msg):
            return
        self._heard[wid] = time.monotonic()
        if not was_live:  # new, or back from the dead: rebuild from scratch
            self.kv_index.drop(wid)
            self.kv_index.mark_stale(wid)
        if self.kv_index.needs_resync(wid):
            await self._ask_resync(wid)
        self._prune_departed()

    def _prune_departed(self) -> None:
        """Drop what the router keeps of workers silent for 4 × `worker_dead_after` (gone
        for good, as the registry counts them): their KV index (up to a pool's worth of keys
        each), circuit and resync stamp. Compose names a worker `w-<uuid>` afresh at each
        start, so without this every restart left its state here for good. By heartbeat, not
        by the registry, which also forgets a worker that did not answer a request (its
        circuit must outlast that). At most every `PRUNE_EVERY_S`."""
        now = time.monotonic()
        if now - self._pruned_at < PRUNE_EVERY_S:
            return
        self._pruned_at = now
        gone_after = 4 * self.cfg.worker_dead_after
        for wid in {*self.kv_index.worker_ids(), *self.breakers.worker_ids(),
                    *self._resync_asked, *self._heard}:
            if now - self._heard.get(wid, -1e18) > gone_after:
                self.kv_index.drop(wid)
                self.breakers.forget(wid)
                self._resync_asked.pop(wid, None)
                self._heard.pop(wid, None)

    async def _on_kv_event(self, msg: Message, raw: Any) -> None:
        assert isinstance(msg, KVEvent)
        self.kv_index.apply(msg)
        if self.kv_index.needs_resync(msg.worker_id):
            await self._ask_resync(msg.worker_id)

    async def _ask_resync(self, worker_id: str) -> None:
        """Ask one worker for its whole KV set, at most once a second."""
        now = time.monotonic()
        if now - self._resync_asked.get(worker_id, -1e9) < 1.0:
            return
        self._resync_asked[worker_id] = now
        await self.publish(wire.KV_RESYNC, KVResync(worker_id))

    async def _ping(self, msg: Message, raw: Any) -> Message:
        return Ping()

    def _unavailable(self, why: str) -> ErrorReply:
        return ErrorReply(503, "service_unavailable", why, code="no_worker",
                          retry_after=float(self.cfg.retry_after))

    def _model_error(self, model: str) -> ErrorReply | None:
        """404 for a model no live worker serves while others are live, 503 for none live."""
        if self.workers.live(model):
            return None
        if self.workers.live():
            return wire.model_not_found(model)
        return self._unavailable(f"no live worker serves {model!r}")

    @traced("router.tokenize")
    async def _tokenize(self, msg: Message, raw: Any) -> Message:
        assert isinstance(msg, TokenizeRequest)
        if (err := self._model_error(msg.model)) is not None:
            return err
        try:
            ids, strs = await asyncio.to_thread(self.tokenizer.tokenize, msg)
        except ValueError as exc:
            return _bad_value(_prompt_param(msg), str(exc))
        live = self.workers.live(msg.model)
        if msg.truncate and msg.messages and not any(v.fits(len(ids)) for v in live):
            ids, strs = await asyncio.to_thread(self._truncated, msg, live, ids, strs)
        return TokenizeReply(ids, max(v.beat.max_model_len for v in live), strs)

    def _truncated(self, msg: TokenizeRequest, live: list[WorkerView], ids: list[int],
                   strs: list[str] | None) -> tuple[list[int], list[str] | None]:
        """A `truncate` request's ids (and strings) with its oldest turns dropped until the
        prompt fits some live worker, as `route` cuts a generation's; as they were when even
        the last turn alone does not fit."""
        kept = truncate(msg.messages or [],
                        lambda m: self.tokenizer.encode_chat(m, msg.tools, msg.template),
                        lambda n: any(v.fits(n) for v in live))
        if kept is None:
            return ids, strs
        return kept, None if strs is None else self.tokenizer.token_strs(kept)

    @traced("router.detokenize")
    async def _detokenize(self, msg: Message, raw: Any) -> Message:
        assert isinstance(msg, DetokenizeRequest)
        if (err := self._model_error(msg.model)) is not None:
            return err
        try:
            return DetokenizeReply(self.tokenizer.detokenize(msg))
        except ValueError as exc:
            return _bad_value("tokens", f"tokens: {exc}")

    async def _generate(self, msg: Message, raw: Any) -> Message:
        assert isinstance(msg, GenerateRequest | EmbedRequest)
        return await self.route(msg, raw.headers)

    @traced("router.route", observe=route_telemetry.observe_route)
    async def route(self, req: GenerateRequest | EmbedRequest,
                    headers: dict[str, str] | None) -> Message:
        """Route one request as the module contract says; `headers` (trace context, request
        id) go on to the worker. The handler of `ROUTER_GENERATE`, and the call a gateway
        process that hosts this router makes in place of that request (kvmesh/cli/colocate.py)."""
        self._routing += 1
        try:
            return await self._route(req, headers)
        finally:
            self._routing -= 1

    async def _route(self, req: GenerateRequest | EmbedRequest,
                     headers: dict[str, str] | None) -> Message:
        candidates = [v for v in self.workers.live(req.model)
                      if v.beat.worker_id not in req.exclude_workers]
        route_telemetry.candidates(req, candidates)
        if not candidates:
            if self.workers.live() and req.model not in self.workers.models():
                return wire.model_not_found(req.model)
            return self._unavailable(f"no live worker serves {req.model!r}")
        if isinstance(req, EmbedRequest):
            return await self._embed(req, candidates, headers)
        ids = req.prompt_token_ids
        if ids is None:
            try:
                ids = await self._encode(req)
            except ValueError as exc:
                return _bad_value(_prompt_param(req), str(exc))
        kept = _kept(req.truncate_prompt_tokens, candidates, max(req.max_tokens or 0, 1))
        if isinstance(kept, ErrorReply):
            return kept
        ids = ids if kept is None else ids[-kept:]
        fitting = [v for v in candidates if v.fits(len(ids), req.max_tokens)]
        if not fitting and req.truncate and req.messages:
            encode = self.tokenizer.encode_chat
            ids = await asyncio.to_thread(
                truncate, req.messages, lambda m: encode(m, req.tools, req.template),
                lambda n: any(v.fits(n, req.max_tokens) for v in candidates)) or ids
            fitting = [v for v in candidates if v.fits(len(ids), req.max_tokens)]
        if not fitting:
            return _context_exceeded(len(ids), req.max_tokens,
                                     max(v.beat.max_model_len for v in candidates),
                                     _prompt_param(req))
        if req.max_tokens is None:  # it runs to its context's end: the widest context's
            widest = max(v.beat.max_model_len for v in fitting)
            fitting = [v for v in fitting if v.beat.max_model_len == widest]
        return await self._forward(TokenizedRequest.of(req, ids), fitting, req.session,
                                   headers)

    async def _embed(self, req: EmbedRequest, views: list[WorkerView],
                     headers: dict[str, str] | None) -> Message:
        pooling = [v for v in views if v.beat.pooling]
        if not pooling:
            return ErrorReply(400, "invalid_request_error", f"the model {req.model!r} serves no "
                              "embeddings (its workers' pooling is none)", "model",
                              "model_not_embedding")
        inputs = req.input_token_ids
        if inputs is None:
            texts = req.inputs or []
            inputs = self.tokenizer.encode_texts(texts) if self._inline(sum(map(len, texts))) \
                else await asyncio.to_thread(self.tokenizer.encode_texts, texts)
        kept = _kept(req.truncate_prompt_tokens, pooling, 1, embedding=True)
        if isinstance(kept, ErrorReply):
            return kept
        if kept is not None:
            inputs = [ids[-kept:] for ids in inputs]
        longest = max(range(len(inputs)), key=lambda i: len(inputs[i]))
        fitting = [v for v in pooling if v.fits(len(inputs[longest]))]
        if not fitting:
            ctx = max(v.beat.max_model_len for v in pooling)
            return ErrorReply(400, "invalid_request_error", f"input[{longest}] has "
                              f"{len(inputs[longest])} tokens; this model's context is {ctx} "
                              f"(at most {ctx - 1} tokens per input)", "input",
                              "context_length_exceeded")
        reply = await self._forward(TokenizedEmbed.of(req, inputs), fitting, req.session,
                                    headers)
        return _named_input(reply)

    async def _encode(self, req: GenerateRequest) -> list[int]:
        size = len(req.prompt or "") + sum(len(m.content) for m in req.messages or [])
        if self._inline(size):
            return self.tokenizer.encode(req)
        return await asyncio.to_thread(self.tokenizer.encode, req)

    def _inline(self, chars: int) -> bool:
        """Tokenize on the loop: a tiny text (a thread hop costs more than it does), or one of
        up to `IDLE_INLINE_CHARS` while no other request is being routed (nothing waits on the
        loop meanwhile); else in a thread, so the loop routes the others
        (`RouterConfig.inline_tokenize_chars`)."""
        return chars < self.cfg.inline_tokenize_chars or (
            self._routing <= 1 and chars <= IDLE_INLINE_CHARS)

    def candidates(self, req: TokenizedRequest | TokenizedEmbed,
                   views: list[WorkerView]) -> list[Candidate]:
        """Workers whose circuit allows a request, with the prompt's (an embedding's first
        input's) cached overlap on each. The last prompt token is left out of the hash, as the
        engine's prefix match does."""
        ids = req.prompt_token_ids if isinstance(req, TokenizedRequest) else req.inputs[0]
        chains: dict[int, list[BlockHash]] = {}
        out = []
        for v in views:
            wid = v.beat.worker_id
            if not self.breakers.allows(wid):
                continue
            bs = v.beat.block_size
            keys = chains.get(bs)
            if keys is None:
                keys = chains[bs] = hash_prefix_blocks(ids[: len(ids) - 1], bs, req.cache_salt)
            out.append(Candidate(v, self.kv_index.overlap(wid, keys), len(keys),
                                 is_overloaded(v, self.policy.params), keys))
        return out

    async def _cancel_at(self, worker_id: str, request_id: str,
                         headers: dict[str, str] | None) -> None:
        """Cancel `request_id` at `worker_id` only (`Cancel.worker_id`); `headers` carry the
        request's id, so the worker's log line names it."""
        with contextlib.suppress(Exception):  # a lost cancel costs work, not correctness
            await self.publish(wire.CANCEL, Cancel(request_id, worker_id=worker_id), headers)

    async def _forward(self, req: TokenizedRequest | TokenizedEmbed, views: list[WorkerView],
                       session: str, headers: dict[str, str] | None) -> Message:
        """Try the ranked workers in turn (backoff with jitter between tries) until one
        accepts; no responders, a timeout or a 503 moves on and counts against the breaker
        (a 503 `overloaded` moves on but counts for it: the worker answered). Every attempt
        ends its breaker's trial one way or the other: a half-open circuit whose trial stayed
        out would shut its worker out for good."""
        ranked = self.policy.rank(self.candidates(req, views), session)
        if not ranked:
            return self._unavailable("every live worker's circuit is open")
        tried = 0
        for cand in ranked:
            if tried >= self.cfg.max_attempts:
                break
            if tried:
                await asyncio.sleep(backoff(tried, self.cfg.retry_backoff))
            tried += 1
            route_telemetry.attempt(req.model, tried)
            wid = cand.worker_id
            self.workers.sent(wid)
            self.breakers.attempt(wid)
            try:
                accepted = await self.request(wire.worker_generate(wid), req,
                                              self.cfg.accept_timeout, Accepted, headers=headers)
            except asyncio.CancelledError:  # the caller left (a hosting gateway's client)
                self.breakers.abandon(wid)  # a half-open circuit's trial must not stay out
                raise
            except PayloadTooLarge as exc:  # many long embedding inputs, as token ids
                self.breakers.abandon(wid)  # never sent: no verdict on the worker
                return ErrorReply(413, "invalid_request_error", f"request too large: {exc}",
                                  code="payload_too_large")
            except NotConnected as exc:  # the router's own link is down: no worker's fault
                self.breakers.abandon(wid)
                return self._unavailable(f"the router lost NATS: {exc}")
            except RemoteError as exc:
                if exc.reply.status != 503 or exc.reply.code == "overloaded":
                    # it answered (a full worker is healthy, just busy): no failure of its own
                    self.breakers.success(wid)
                if exc.reply.status != 503:
                    return exc.reply  # the request is at fault
                log.info("worker %s refused %s: %s", wid, req.request_id, exc)
                if exc.reply.code != "overloaded":
                    self.breakers.failure(wid)
                continue
            except (NoResponders, RequestTimeout) as exc:
                log.warning("worker %s did not accept %s: %s", wid, req.request_id, exc)
                self.breakers.failure(wid)
                self.workers.forget(wid)
                if isinstance(exc, RequestTimeout):  # it may have it, or take it later
                    await self._cancel_at(wid, req.request_id, headers)
                continue
            self.breakers.success(wid)
            if isinstance(req, TokenizedRequest):  # it caches the prompt's blocks once prefilled
                self.kv_index.expect(wid, cand.keys)
            accepted.prefix_overlap = cand.overlap
            log.debug("%s -> %s (%s, overlap %d/%d blocks)", req.request_id, wid,
                      self.policy.name, cand.overlap, cand.prompt_blocks)
            return accepted
        return self._unavailable(f"no worker accepted the request after {tried} attempt(s)")


def _prompt_param(req: GenerateRequest | TokenizeRequest) -> str:
    """The request field that holds the prompt: `messages` (chat) or `prompt` (completions)."""
    return "messages" if req.messages is not None else "prompt"


def _kept(keep: int | None, views: list[WorkerView], reserved: int,
          embedding: bool = False) -> int | ErrorReply | None:
    """How many tokens `truncate_prompt_tokens` keeps of a prompt (None: all of it) on the
    largest context among `views`, or its 400 (router/truncation.py `tail_size`); an
    embedding input may keep at most the context less one (what it may be)."""
    if keep is None:
        return None
    context = max(v.beat.max_model_len for v in views)
    try:
        return tail_size(keep, context, reserved, context - 1 if embedding else None)
    except ValueError as exc:
        return _bad_value("truncate_prompt_tokens", str(exc))


def _bad_value(param: str, message: str) -> ErrorReply:
    return ErrorReply(400, "invalid_request_error", message, param, "invalid_value")


def _named_input(reply: Message) -> Message:
    """An embedding's refusal, naming `input` where the worker's prompt check named the
    prompt (`prompt`, or `messages` for its length): the caller sent the ids as `input`."""
    if not isinstance(reply, ErrorReply) or reply.param not in ("prompt", "messages"):
        return reply
    why = reply.message.removeprefix(f"{reply.param}: ")
    return dataclasses.replace(reply, param="input", message=f"input: {why}")


def _context_exceeded(n: int, max_tokens: int | None, largest: int,
                      prompt_param: str) -> ErrorReply:
    if n >= largest or max_tokens is None:
        why, param = f"the prompt has {n} tokens; this model's context is {largest}", prompt_param
    else:
        why = (f"the prompt ({n} tokens) plus max_tokens ({max_tokens}) exceeds this model's "
               f"context of {largest} tokens")
        param = "max_tokens"
    return ErrorReply(400, "invalid_request_error", why, param, "context_length_exceeded")


class RouterStartError(RuntimeError):
    """The router could not load its model's tokenizer."""


async def load_router(cfg: RouterConfig) -> Router:
    """A router with its model's tokenizer loaded, not yet started; `RouterStartError` when
    the tokenizer does not load."""
    try:
        tokenizer = await asyncio.to_thread(PromptTokenizer.load, cfg.model)
    except (OSError, ValueError) as exc:  # not found, not a model, a tokenizer it cannot read
        raise RouterStartError(str(exc)) from exc
    return Router(cfg, tokenizer)


async def serve(cfg: RouterConfig) -> None:
    router = await load_router(cfg)
    await router.start()
    await router.run_until_stopped()


def main(argv: Sequence[str] | None = None) -> int:
    cfg = load(RouterConfig, sys.argv[1:] if argv is None else argv)
    instance = f"router-{os.getpid()}"
    try:
        return run_service("router", instance, serve(cfg), cfg.log_level, cfg.metrics_port,
                           cfg.metrics_host, cfg.busy_poll)
    except RouterStartError as exc:  # one log line, not a traceback
        log.error("router: the tokenizer did not load: %s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
