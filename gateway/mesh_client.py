"""The gateway's side of the mesh: send a request to the router, then read its deltas; keep
the registry of live workers from their heartbeats.

Contract:
- One NATS subscription per gateway process (`inbox`) receives every worker's `Deltas` frames
  for this process's requests; they are demultiplexed by request id into `RequestStream`s. A
  stream is registered before its request is sent, so a delta that overtakes the router's
  `Accepted` is kept, not lost. A stream takes deltas and errors only from the worker that
  accepted its request (those that came before the `Accepted` wait for it): a worker the
  request was first sent to, paused past its turn and resumed, never mixes its output in.
- `generate` sends the request to the router and returns a `RequestStream` once a worker
  accepted, or raises `ApiError`: the router's or worker's `ErrorReply` as is, 503 when no
  router listens (or NATS is down), 504 when the router does not answer in time, 413 when the
  request exceeds the NATS max payload. A request whose routing timed out or was cancelled
  (the client left) gets a cancel, so no worker that accepts it late runs it for nobody.
- `RequestStream.batch()` returns every chunk that arrived since the last call, in `seq` order
  (waiting for at least one), and `[]` once the chunk with usage was returned. It raises
  `ApiError`: the worker's error, 502 when the worker stops heartbeating (it died), 502
  `stream_gap` when a chunk was lost in transit (core NATS delivers at most once: a frame in
  flight when NATS restarts is gone, and a worker's frames reach this process in order, so a
  later chunk that waits `GAP_GRACE_S` for an earlier one waits for nothing), 504 when
  nothing came for `chunk_timeout` seconds. One watchdog task per process checks every stream
  (no timer per request or per chunk).
- A chunk (not the last) of a request this process streams no more means its cancel was lost:
  published while NATS restarted, before the workers had subscribed again, core NATS drops
  it. The request is cancelled again at that worker, at most once per `STRAY_S` (counting
  from this process's own cancel, so the frames in flight behind a cancel send no second).
- The process publishes a `GatewayBeat` naming its inbox every `GATEWAY_BEAT_S`: should it
  crash, workers stop its requests rather than generate for nobody. It hears the others'
  beats too (`gateway_gone`: a stored Response another one was generating when it crashed).
- A worker that dies before the request's first chunk is not the client's problem: the stream
  re-routes the request (that worker excluded, and told to cancel it should it come back) up
  to `retry_before_first_token` times.
- Per-request state is bounded: a stream keeps its chunks only when asked to (`keep`: the
  result cache stores them); otherwise it keeps the usage and a token count.
- The registry of workers (`kvmesh.worker_registry`, fed by heartbeats) answers which models
  are served (404, /v1/models) and whether a request's worker is alive.
- With a `LocalRouter` (`colocate_router`), that router starts as this client joins the
  mesh (`connected` waits for it) and `route` calls it in place of the request on
  `ROUTER_GENERATE`: the same answers and errors, one process and one NATS hop fewer on
  every request's way in. It drains after this client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from gateway.embeddings_request import EmbeddingsRequest
from gateway.errors import ApiError, no_worker
from gateway.openai_request import ParsedRequest
from kvmesh import wire
from kvmesh.actor import (
    Actor,
    NoResponders,
    NotConnected,
    PayloadTooLarge,
    RemoteError,
    RequestTimeout,
)
from kvmesh.config import GatewayConfig
from kvmesh.wire import (
    Accepted,
    Cancel,
    Chunk,
    Deltas,
    EmbedRequest,
    ErrorReply,
    GatewayBeat,
    GenerateRequest,
    Heartbeat,
    Message,
    Ping,
    UsageInfo,
)
from kvmesh.worker_registry import WorkerRegistry
from telemetry import propagation
from telemetry.propagation import request_id_var

log = logging.getLogger("kvmesh.gateway.mesh")
GATEWAY_GONE_S = 10.0  # a gateway process silent this long crashed (`gateway_gone`)
M = TypeVar("M", bound=Message)
WATCH_S = 0.25
GAP_GRACE_S = 1.0  # how long a later chunk waits for a missing one before the stream fails
STRAY_S = 1.0  # a request still running with no stream here is cancelled again this often


class LocalRouter(Protocol):
    """A router actor in this gateway's process. kvmesh/cli/colocate.py builds it (the
    gateway imports no router code); it is a whole router on its own NATS connection, serving
    its queue group like any other, whose `route` answers what a request on `ROUTER_GENERATE`
    would: an `Accepted` or an `ErrorReply`."""

    @property
    def connected(self) -> bool: ...

    async def start(self) -> None: ...

    async def route(self, req: GenerateRequest | EmbedRequest,
                    headers: dict[str, str] | None) -> Message: ...

    async def drain(self) -> None: ...


class MeshClient(Actor):
    """The gateway process's actor on the mesh. A client of the router, auth and the cache
    (requests), and a server too, despite its name: it subscribes to the workers' heartbeats
    (`wire.HEARTBEAT`, feeding `workers`) and to this process's `inbox` of `Deltas` frames."""

    def __init__(self, cfg: GatewayConfig, local_router: LocalRouter | None = None) -> None:
        super().__init__("gateway", cfg.nats_url, cfg.grace_period, propagation)
        self.cfg = cfg
        self.local_router = local_router
        self.workers = WorkerRegistry(cfg.worker_dead_after)
        self.streams: dict[str, RequestStream] = {}
        self.inbox = ""
        self.gateways: dict[str, float] = {}  # other gateway processes' inboxes -> last beat
        self._joined_at = 0.0
        self.instance = f"{socket.gethostname()}-{os.getpid()}"  # x-kvmesh-gateway
        self._background: set[asyncio.Future[Any]] = set()
        self._cancels: dict[str, float] = {}  # request id -> when it was last cancelled
        self._joined = False
        # Subscriptions of the gateway's other clients (auth's revocations), made once NATS
        # answers: the gateway may serve HTTP (503s) before it does.
        self.on_join: list[Callable[[], Awaitable[None]]] = []

    async def start(self) -> None:
        """Join the mesh: connect (waiting as long as NATS is down), subscribe this process's
        inbox and the heartbeats, then run the `on_join` hooks. `connected` is true only from
        then on, so no request leaves before its deltas have somewhere to go."""
        nc = await self.connect()
        self.inbox = nc.new_inbox()
        await nc.subscribe(self.inbox, cb=self._on_deltas, direct=True)
        await self.serve(wire.HEARTBEAT, (Heartbeat,), self._on_heartbeat, polls=False)
        await self.serve(wire.GATEWAY_HEARTBEAT, (GatewayBeat,), self._on_gateway_beat,
                         polls=False)
        self._joined_at = time.monotonic()
        for hook in self.on_join:
            await hook()
        if self.local_router is not None:
            await self.local_router.start()
        self._spawn(self._watchdog())
        self._spawn(self._beats())
        self._joined = True
        log.info("gateway joined the mesh at %s", self.nats_url)

    @property
    def connected(self) -> bool:
        return self._joined and super().connected

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _on_heartbeat(self, msg: Message, raw: object) -> None:
        assert isinstance(msg, Heartbeat)
        self.workers.observe(msg)

    async def _on_gateway_beat(self, msg: Message, raw: object) -> None:
        assert isinstance(msg, GatewayBeat)
        self.gateways[msg.inbox] = time.monotonic()

    def gateway_gone(self, inbox: str) -> bool:
        """Whether the gateway process reading `inbox` has not beaten for `GATEWAY_GONE_S`
        (one never heard counts once this process has listened that long)."""
        if inbox == self.inbox or not self._joined_at:
            return False
        now = time.monotonic()
        return now - self.gateways.get(inbox, self._joined_at) > GATEWAY_GONE_S

    async def _on_deltas(self, raw: Any) -> None:
        """Hot path: one frame per worker step; each chunk goes to its request's stream."""
        try:
            frame = wire.decode(raw.data, Deltas)
        except wire.WireError as exc:
            log.warning("bad deltas frame: %s", exc)
            return
        streams, worker = self.streams, frame.worker_id
        for chunk in frame.chunks:
            stream = streams.get(chunk.request_id)
            if stream is not None:
                stream.push(chunk, worker)
            elif chunk.usage is None:  # the request still runs, for nobody
                self._stray(chunk.request_id, worker)
        for err in frame.errors:
            stream = streams.get(err.request_id)
            if stream is not None:
                stream.fail(ApiError.from_reply(err.error), worker)

    def _stray(self, request_id: str, worker: str) -> None:
        """Cancel again, at `worker`, a request whose stream is gone (see the contract)."""
        now = time.monotonic()
        if now - self._cancels.get(request_id, -STRAY_S) >= STRAY_S:
            log.info("%s still runs at %s with no stream here; cancelling it again",
                     request_id, worker)
            self.cancel_soon(request_id, worker_id=worker)

    async def _beats(self) -> None:
        """Say every `GATEWAY_BEAT_S` that this process reads its inbox: workers stop the
        requests of a gateway whose beats stopped (inference/worker.py)."""
        beat = GatewayBeat(self.inbox)
        while True:
            with contextlib.suppress(Exception):  # NATS down: the next beat tries again
                await self.publish(wire.GATEWAY_HEARTBEAT, beat)
            await asyncio.sleep(wire.GATEWAY_BEAT_S)

    async def _watchdog(self) -> None:
        """Fail streams whose worker died or went quiet (one task for every stream)."""
        while True:
            await asyncio.sleep(WATCH_S)
            now = time.monotonic()
            for stream in list(self.streams.values()):
                stream.check(now)
            self._cancels = {rid: t for rid, t in self._cancels.items() if now - t < STRAY_S}

    def models(self) -> dict[str, int]:
        """Models with a live worker -> their largest context length."""
        return self.workers.models()

    def revision(self, model: str) -> str:
        return self.workers.revision(model)

    async def router_ready(self) -> bool:
        """Whether this process's requests can be routed: its hosted router holds its NATS
        connection, or else some router answers a ping."""
        if self.local_router is not None:
            return self.local_router.connected
        try:
            await self.request(wire.ROUTER_PING, Ping(), 1.0, Ping)
            return True
        except Exception:
            return False

    async def generate(self, req: ParsedRequest | EmbeddingsRequest, request_id: str,
                       keep: bool = False) -> RequestStream:
        """Route `req` (a generation, or embeddings: one chunk per input) and return its
        stream once a worker accepted it."""
        stream = RequestStream(self, req.to_wire(request_id, self.inbox), keep, req.key_id)
        await stream.route()
        return stream

    async def route(self, wreq: GenerateRequest | EmbedRequest) -> Accepted:
        """Send `wreq` to the router (the one in this process, if any); errors as in the
        module contract."""
        rid = request_id_var.get() or wreq.request_id
        if self.local_router is None:
            return await self.ask_router(wire.ROUTER_GENERATE, wreq, Accepted, rid)
        try:
            async with asyncio.timeout(self.cfg.router_timeout):
                reply = await self.local_router.route(wreq, {wire.REQUEST_ID_HEADER: rid})
        except TimeoutError:
            raise _router_timeout() from None
        if isinstance(reply, ErrorReply):
            raise ApiError.from_reply(reply)
        assert isinstance(reply, Accepted), reply
        return reply

    async def ask_router(self, subject: str, msg: Message, expected: type[M],
                         request_id: str = "") -> M:
        """One request-reply with a router (generate, tokenize, detokenize); errors as in the
        module contract. The `Kvmesh-Request-Id` header is the HTTP request's id
        (x-request-id), for the mesh's log lines."""
        rid = request_id or request_id_var.get()
        try:
            return await self.request(subject, msg, self.cfg.router_timeout, expected,
                                      headers={wire.REQUEST_ID_HEADER: rid} if rid else None)
        except RemoteError as exc:
            raise ApiError.from_reply(exc.reply) from None
        except NotConnected:
            raise no_worker("the mesh (NATS) is unreachable", self.cfg.retry_after) from None
        except NoResponders:
            raise no_worker("no router is running", self.cfg.retry_after) from None
        except RequestTimeout:
            raise _router_timeout() from None
        except PayloadTooLarge as exc:
            raise ApiError(413, f"request too large: {exc}", code="payload_too_large") from None

    async def drain(self) -> None:
        await super().drain()
        if self.local_router is not None:  # after this client's streams: they route no more
            await self.local_router.drain()

    async def cancel(self, request_id: str, superseded: bool = False,
                     worker_id: str = "") -> None:
        """Publish the cancel, with the HTTP request's id (the workers' log lines name it)."""
        self._cancels[request_id] = time.monotonic()
        rid = request_id_var.get()
        with contextlib.suppress(Exception):
            await self.publish(wire.CANCEL, Cancel(request_id, superseded, worker_id),
                               {wire.REQUEST_ID_HEADER: rid} if rid else None)

    def end_streams(self, key_ids: set[str], err: ApiError) -> None:
        """End with `err` every stream of a request made with one of `key_ids` (revoked);
        each handler then cancels its request at the worker."""
        for stream in list(self.streams.values()):
            if stream.key_id in key_ids:
                stream.fail(err)

    def cancel_soon(self, request_id: str, superseded: bool = False,
                    worker_id: str = "") -> None:
        """Publish a cancel from a handler that is itself being cancelled (`superseded`,
        `worker_id`: see `wire.Cancel`)."""
        self._spawn(self.cancel(request_id, superseded, worker_id))


def _router_timeout() -> ApiError:
    return ApiError(504, "the router did not answer in time", "timeout", code="router_timeout")


class RequestStream:
    """The chunks of one request, as its worker sends them (see the module contract)."""

    def __init__(self, mesh: MeshClient, wreq: GenerateRequest | EmbedRequest,
                 keep: bool, key_id: str = "") -> None:
        self.mesh = mesh
        self.wreq = wreq
        self.key_id = key_id  # the caller's API key ("" with auth off)
        self.request_id = wreq.request_id
        self.accepted = Accepted(wreq.request_id, "", 0)
        self.chunks: list[Chunk] | None = [] if keep else None
        self.usage: UsageInfo | None = None
        self.tokens = 0  # completion tokens delivered so far
        self.done = self.completed = False
        self._pending: list[Chunk] = []
        self._next = 0  # the seq expected next
        self._held: dict[int, Chunk] = {}  # chunks after a missing one (see `check`)
        self._gap_since = 0.0  # when the oldest held chunk arrived (0: nothing held)
        self._error: ApiError | None = None
        self._wake: asyncio.Future[None] | None = None
        self._heard = self._accepted_at = time.monotonic()
        self._reroutes = mesh.cfg.retry_before_first_token
        # (worker, chunk or error) that came before the router's Accepted named the worker
        self._early: list[tuple[str, Chunk | ApiError]] = []

    @property
    def worker_id(self) -> str:
        return self.accepted.worker_id

    async def route(self) -> None:
        """Register, then ask the router; unregistered again if it refuses. When routing ends
        undecided (the router's answer timed out, or the handler was cancelled: the client
        left), a worker may accept the request after all: it gets a cancel, which a worker
        honours on arrival even before the request (inference/worker.py)."""
        self.mesh.streams[self.request_id] = self
        try:
            self.accepted = await self.mesh.route(self.wreq)
        except BaseException as exc:
            self.close()
            if not isinstance(exc, ApiError) or exc.code == "router_timeout":
                self.mesh.cancel_soon(self.request_id)
            raise
        finally:
            early, self._early = self._early, []
        self._heard = self._accepted_at = time.monotonic()
        for worker, item in early:
            if isinstance(item, ApiError):
                self.fail(item, worker)
            else:
                self.push(item, worker)

    # -- filled by the mesh client (loop thread) -------------------------------------------

    def _ours(self, worker: str, item: Chunk | ApiError) -> bool:
        """Whether `worker`'s chunk or error is this stream's: its accepting worker's. Before
        the Accepted came, it is kept for `route` to sort."""
        accepted = self.accepted.worker_id
        if not accepted:
            self._early.append((worker, item))
        return worker == accepted

    def push(self, chunk: Chunk, worker: str) -> None:
        """Hot path: a chunk of the request from `worker`."""
        if worker != self.accepted.worker_id and not self._ours(worker, chunk):
            return
        self._heard = time.monotonic()
        if chunk.seq != self._next:
            self._held[chunk.seq] = chunk
            self._gap_since = self._gap_since or self._heard
            return
        self._take(chunk)
        while self._next in self._held:
            self._take(self._held.pop(self._next))
        if not self._held:
            self._gap_since = 0.0
        self._wakeup()

    def _take(self, chunk: Chunk) -> None:
        self._next += 1
        self._pending.append(chunk)

    def fail(self, err: ApiError, worker: str = "") -> None:
        """End the stream with `err`: `worker`'s (only the accepting worker's counts), or
        this process's own ("")."""
        if worker and not self._ours(worker, err):
            return
        if self._error is None:
            self._error = err
        self._wakeup()

    def check(self, now: float) -> None:
        """The watchdog's look: is the worker alive, and has it said anything lately?"""
        if self.done or self._error is not None or not self.worker_id:
            return
        if self.mesh.workers.presumed_dead(self.worker_id, self._accepted_at):
            self.fail(ApiError(502, f"worker {self.worker_id} died while serving the request",
                               "bad_gateway", code="worker_died"))
        elif self._gap_since and now - self._gap_since > GAP_GRACE_S:
            self.fail(ApiError(502, f"part of the answer from worker {self.worker_id} was lost "
                               f"in transit (chunk {self._next} never came; NATS may have "
                               "restarted); send the request again", "bad_gateway",
                               code="stream_gap"))
        elif now - self._heard > self.mesh.cfg.chunk_timeout:
            self.fail(ApiError(504, f"worker {self.worker_id} sent nothing for "
                               f"{self.mesh.cfg.chunk_timeout:g}s", "timeout",
                               code="worker_timeout"))

    def _wakeup(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    # -- read by the handler ---------------------------------------------------------------

    async def batch(self) -> list[Chunk]:
        """Every chunk since the last call (at least one), or [] at the end."""
        while True:
            if self.done:
                return []
            if self._pending:
                return self._deliver()
            if self._error is not None:
                await self._on_error()
                continue
            self._wake = asyncio.get_running_loop().create_future()
            await self._wake
            self._wake = None

    def _deliver(self) -> list[Chunk]:
        out, self._pending = self._pending, []
        for chunk in out:
            self.tokens += len(chunk.token_ids)
            if chunk.usage is not None:
                self.usage = chunk.usage
                self.done = self.completed = True
        if self.chunks is not None:
            self.chunks.extend(out)
        if self.done:
            self.close()
        return out

    async def _on_error(self) -> None:
        """Re-route when the worker died before anything was delivered; else raise."""
        err = self._error
        assert err is not None
        if err.code != "worker_died" or self._next or self._reroutes < 1:
            self.done = True
            self.close()
            raise err
        self._reroutes -= 1
        self.wreq.exclude_workers = [*self.wreq.exclude_workers, self.worker_id]
        log.info("worker %s died before %s's first token; routing it again",
                 self.worker_id, self.request_id)
        self.mesh.cancel_soon(self.request_id, worker_id=self.worker_id)  # if it comes back
        self._error = None
        self._held.clear()  # the dead worker's (this one was waiting for its chunk 0)
        self._gap_since = 0.0
        self.accepted = Accepted(self.request_id, "", 0)
        await self.route()

    def close(self) -> None:
        """Stop receiving (idempotent)."""
        if self.mesh.streams.get(self.request_id) is self:
            del self.mesh.streams[self.request_id]
