"""The gateway's side of the mesh: send a request to the router, then read its chunks.

Contract:
- `generate` subscribes a fresh inbox, sends the request to the router and returns a
  `ChunkStream` once a worker accepted, or raises `ApiError`: the router's or worker's
  `ErrorReply` as is, 503 when no router listens, 504 when the router does not answer in time,
  413 when the request exceeds the NATS max payload.
- A `ChunkStream` yields the request's chunks in `seq` order and ends after the chunk that
  carries usage. It raises `ApiError` 502 when the worker stops heartbeating (it died), 504
  when no chunk came for `chunk_timeout` seconds, or the worker's `ErrorReply`.
- The gateway tracks workers from their heartbeats: which models are served (for 404 and
  /v1/models) and whether the worker of a running request is still alive.
- A worker that dies before the request's first chunk is not the client's problem: the stream
  re-routes the request (a fresh inbox, that worker excluded) up to `retry_before_first_token`
  times. After a chunk was delivered, its death is an `ApiError` 502 as above.
- `ChunkStream.chunks` keeps every chunk delivered (for the result cache); `completed` is True
  once the chunk with usage arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import nats.errors
from nats.aio.subscription import Subscription

from gateway.errors import ApiError, no_worker
from gateway.openai_request import ParsedRequest
from kvmesh import wire
from kvmesh.actor import (
    Actor,
    NoResponders,
    PayloadTooLarge,
    RemoteError,
    RequestTimeout,
)
from kvmesh.config import GatewayConfig
from kvmesh.wire import Accepted, Cancel, Chunk, ErrorReply, Heartbeat, Message, Ping

POLL_S = 0.25


@dataclass
class SeenWorker:
    model: str
    max_model_len: int
    seen_at: float
    draining: bool
    revision: str = ""


class MeshClient(Actor):
    def __init__(self, cfg: GatewayConfig) -> None:
        super().__init__("gateway", cfg.nats_url, cfg.grace_period)
        self.cfg = cfg
        self.workers: dict[str, SeenWorker] = {}
        self._background: set[asyncio.Future[None]] = set()

    async def start(self) -> None:
        await self.connect()
        await self.serve(wire.HEARTBEAT, (Heartbeat,), self._on_heartbeat)

    async def _on_heartbeat(self, msg: Message, raw: object) -> None:
        assert isinstance(msg, Heartbeat)
        self.workers[msg.worker_id] = SeenWorker(msg.model, msg.max_model_len,
                                                 time.monotonic(), msg.draining, msg.revision)

    def revision(self, model: str) -> str:
        """The revisions live workers serve `model` at, joined (for result-cache keys)."""
        return ",".join(sorted({w.revision for wid, w in list(self.workers.items())
                                if w.model == model and self.worker_alive(wid)}))

    def worker_alive(self, worker_id: str) -> bool:
        w = self.workers.get(worker_id)
        return w is not None and time.monotonic() - w.seen_at <= self.cfg.worker_dead_after

    def models(self) -> dict[str, int]:
        """Models with a live worker -> their context length."""
        out: dict[str, int] = {}
        for wid, w in list(self.workers.items()):
            if self.worker_alive(wid) and not w.draining:
                out[w.model] = max(out.get(w.model, 0), w.max_model_len)
        return out

    async def router_ready(self) -> bool:
        try:
            await self.request(wire.ROUTER_PING, Ping(), 1.0, Ping)
            return True
        except Exception:
            return False

    async def generate(self, req: ParsedRequest, request_id: str) -> ChunkStream:
        sub, wreq, accepted = await self.route(req.to_wire(request_id, ""))
        return ChunkStream(self, sub, accepted, req.n, wreq)

    async def route(self, wreq: wire.GenerateRequest
                    ) -> tuple[Subscription, wire.GenerateRequest, Accepted]:
        """Send `wreq` (with a fresh inbox as its reply subject) to the router; errors as in
        the module contract."""
        nc = self._client()
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox, pending_msgs_limit=65536)
        wreq.reply_to = inbox
        request_id = wreq.request_id
        try:
            accepted = await self.request(
                wire.ROUTER_GENERATE, wreq, self.cfg.router_timeout,
                Accepted, headers={wire.REQUEST_ID_HEADER: request_id})
        except RemoteError as exc:
            await sub.unsubscribe()
            raise ApiError.from_reply(exc.reply) from None
        except NoResponders:
            await sub.unsubscribe()
            raise no_worker("no router is running", self.cfg.retry_after) from None
        except RequestTimeout:
            await sub.unsubscribe()
            raise ApiError(504, "the router did not answer in time", "timeout",
                           code="router_timeout") from None
        except PayloadTooLarge as exc:
            await sub.unsubscribe()
            raise ApiError(413, f"request too large: {exc}", code="payload_too_large") from None
        except BaseException:
            await sub.unsubscribe()
            raise
        return sub, wreq, accepted

    async def cancel(self, request_id: str) -> None:
        with contextlib.suppress(Exception):
            await self.publish(wire.CANCEL, Cancel(request_id))

    def cancel_soon(self, request_id: str) -> None:
        """Publish a cancel from a handler that is itself being cancelled."""
        task = asyncio.ensure_future(self.cancel(request_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)


class ChunkStream:
    """The ordered chunks of one accepted request (see the module contract)."""

    def __init__(self, mesh: MeshClient, sub: Subscription, accepted: Accepted, n: int,
                 wreq: wire.GenerateRequest | None = None) -> None:
        self.mesh = mesh
        self.sub = sub
        self.accepted = accepted
        self.worker_id = accepted.worker_id
        self.done = False
        self.completed = False
        self.chunks: list[Chunk] = []
        self._wreq = wreq
        self._reroutes = mesh.cfg.retry_before_first_token if wreq is not None else 0
        self._next = 0
        self._held: dict[int, Chunk] = {}
        self.on_chunk: Callable[[Chunk], None] | None = None  # telemetry's per-chunk hook

    def __aiter__(self) -> ChunkStream:
        return self

    async def __anext__(self) -> Chunk:
        if self.done:
            raise StopAsyncIteration
        while self._next not in self._held:
            try:
                self._hold(await self._receive())
            except ApiError as err:
                if err.code != "worker_died" or self._next or self._held or self._reroutes < 1:
                    raise
                await self._reroute()
        chunk = self._held.pop(self._next)
        self._next += 1
        self.chunks.append(chunk)
        if self.on_chunk is not None:
            self.on_chunk(chunk)
        if chunk.usage is not None:
            self.done = self.completed = True
        return chunk

    async def _reroute(self) -> None:
        """The worker died before sending anything: route the request again, without it."""
        assert self._wreq is not None
        self._reroutes -= 1
        self._wreq.exclude_workers = [*self._wreq.exclude_workers, self.worker_id]
        await self.close()
        self.sub, self._wreq, self.accepted = await self.mesh.route(self._wreq)
        self.worker_id = self.accepted.worker_id
        self.done = False

    def _hold(self, msg: Message) -> None:
        if isinstance(msg, ErrorReply):
            self.done = True
            raise ApiError.from_reply(msg)
        assert isinstance(msg, Chunk)
        self._held[msg.seq] = msg

    async def _receive(self) -> Message:
        """Next frame on the inbox; watches the worker's heartbeat while waiting."""
        cfg = self.mesh.cfg
        deadline = time.monotonic() + cfg.chunk_timeout
        while True:
            try:
                raw = await self.sub.next_msg(timeout=POLL_S)
                return wire.decode(raw.data, Chunk, ErrorReply)
            except nats.errors.TimeoutError:
                pass
            except wire.WireError as exc:
                self.done = True
                raise ApiError(502, f"worker sent a bad frame: {exc}", "bad_gateway",
                               code="bad_frame") from None
            if not self.mesh.worker_alive(self.worker_id):
                self.done = True
                raise ApiError(502, f"worker {self.worker_id} died while serving the request",
                               "bad_gateway", code="worker_died")
            if time.monotonic() > deadline:
                self.done = True
                raise ApiError(504, f"worker {self.worker_id} sent nothing for "
                               f"{cfg.chunk_timeout:g}s", "timeout", code="worker_timeout")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.sub.unsubscribe()


async def wait_first(stream: ChunkStream) -> Chunk | None:
    """The first chunk, or None if the stream is already over."""
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return None

