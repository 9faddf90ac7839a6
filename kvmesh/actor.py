"""The actor base every mesh service stands on: one NATS connection and its handlers.

Contract:
- `connect` retries until the server answers, then keeps reconnecting forever on loss; an
  error that repeats (a server that stays down) is logged every `ERROR_LOG_S`, not per try.
- `serve(subject, kinds, handler)` subscribes (in a queue group when `queue` is given) and runs
  at most `max_concurrency` handlers at once; further messages wait their turn as tasks, up to
  `MAX_WAITING`; one past that gets an `ErrorReply` (503, code `overloaded`; logged once
  every `ERROR_LOG_S`). The subscription is direct (kvmesh/nats_client.py): a message's task
  is made as the reader parses it.
  A frame that does not decode gets an `ErrorReply` (400, `invalid_frame`) when it has a reply
  subject, and a log line; it never kills the actor. A handler that raises gets a 500 reply.
  A handler's return value, if not None, is sent to the message's reply subject.
- `notices(subject)` sets an event for every message on `subject` while its block runs, for
  readers that would otherwise poll (best effort: they poll still, more slowly).
- `publish` and `request` refuse a frame over the server's max payload with `PayloadTooLarge`
  before sending it. `request` turns a timeout into `RequestTimeout`, no subscriber into
  `NoResponders`, and an `ErrorReply` answer into `RemoteError`; while the connection is down
  it fails at once with `NotConnected` (a `NoResponders`), not after its timeout.
- Context across hops: `publish` and `request` pass their NATS headers through the actor's
  `propagation.inject`, and a handler runs inside `propagation.attach(its message's headers)`.
  Services pass `telemetry.propagation` (W3C `traceparent`/`tracestate` and the
  `Kvmesh-Request-Id`, so a handler's spans join the caller's trace and its logs name the
  request); the default, `NO_PROPAGATION`, carries nothing. The actor itself imports no
  telemetry: it stands on the ground floor (kvmesh/layers.py).
- `run_until_stopped` waits for SIGTERM/SIGINT, then drains: unsubscribes (no new work), waits
  for in-flight handlers up to the grace period, runs `on_drain` hooks, and closes. The
  connection's own drain ends early if the connection is lost meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractContextManager
from typing import Protocol, TypeVar

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from kvmesh import wire
from kvmesh.nats_client import FastClient, NatsClient, PlainClient
from kvmesh.wire import ErrorReply, Message, WireError

log = logging.getLogger(__name__)
CLOSE_S = 2.0  # for an unsubscribe or a close, which can hang on a connection being lost
ERROR_LOG_S = 10.0  # the same NATS error (a server that stays down) is logged this often
MAX_WAITING = 65536  # messages waiting for a handler slot (the subscriptions' pending limit was)
HOOK_SLACK_S = 5.0  # past the grace period, for drain hooks to abort and report what is left
M = TypeVar("M", bound=Message)
Handler = Callable[[Message, Msg], Awaitable[Message | None]]


class Propagation(Protocol):
    """What travels beside a message in its NATS headers (trace context, request id)."""

    def inject(self, headers: dict[str, str] | None) -> dict[str, str] | None:
        """`headers` plus what the current context carries (or `headers` itself: nothing)."""
        ...

    def attach(self, headers: Mapping[str, str] | None) -> AbstractContextManager[object]:
        """A block run in the context `headers` carry."""
        ...


class _NoPropagation:
    def inject(self, headers: dict[str, str] | None) -> dict[str, str] | None:
        return headers

    def attach(self, headers: Mapping[str, str] | None) -> AbstractContextManager[object]:
        return contextlib.nullcontext()


NO_PROPAGATION: Propagation = _NoPropagation()


class MeshError(Exception):
    """A request across the mesh that did not get a good answer."""


class RequestTimeout(MeshError):
    pass


class NoResponders(MeshError):
    pass


class NotConnected(NoResponders):
    """The actor has no NATS connection now (it keeps reconnecting)."""


class PayloadTooLarge(MeshError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message of {size} bytes exceeds the NATS max payload of {limit} bytes")
        self.size, self.limit = size, limit


class RemoteError(MeshError):
    def __init__(self, reply: ErrorReply) -> None:
        super().__init__(f"{reply.status} {reply.type}: {reply.message}")
        self.reply = reply


class Actor:
    """One service's NATS presence. Subclasses add handlers in `start` and state of their own."""

    def __init__(self, name: str, nats_url: str, grace_period: float = 30.0,
                 propagation: Propagation = NO_PROPAGATION) -> None:
        self.name = name
        self.propagation = propagation
        self.nats_url = nats_url
        self.grace_period = grace_period
        self.nc: FastClient | PlainClient | None = None
        self._subs: list[Subscription] = []
        self._inflight: set[asyncio.Task[None]] = set()
        self._refused_logged = -ERROR_LOG_S  # when the last refusal was logged (monotonic)
        self._stop = asyncio.Event()
        self._lost = asyncio.Event()  # set while the connection is down
        self.draining = False
        self.on_drain: list[Callable[[], Awaitable[None]]] = []

    # -- connection ------------------------------------------------------------------------

    async def connect(self) -> FastClient | PlainClient:
        """Connect, retrying every half second until the server answers (nats-py's own loop:
        `max_reconnect_attempts=-1` covers the first connection too), then reconnect for ever
        on loss. A failure that repeats is logged once per `ERROR_LOG_S`, not per attempt."""
        last: dict[str, float] = {}

        async def on_error(exc: Exception) -> None:
            text, now = str(exc), time.monotonic()
            if now - last.get(text, -ERROR_LOG_S) >= ERROR_LOG_S:
                last[text] = now
                log.warning("%s: nats error: %s", self.name, text)

        async def on_disconnect() -> None:
            self._lost.set()
            log.warning("%s: disconnected from nats", self.name)

        async def on_reconnect() -> None:
            self._lost.clear()
            last.clear()
            log.info("%s: reconnected to nats", self.name)

        nc = NatsClient()
        await nc.connect(
            self.nats_url, name=self.name, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
            connect_timeout=2, error_cb=on_error, disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect)
        self.nc = nc
        return nc

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    def _client(self) -> FastClient | PlainClient:
        if self.nc is None:
            raise NotConnected(f"{self.name}: not connected to nats yet")
        return self.nc

    # -- sending ---------------------------------------------------------------------------

    def _frame(self, msg: Message) -> bytes:
        data = wire.encode(msg)
        limit = self._client().max_payload
        if limit and len(data) > limit:
            raise PayloadTooLarge(len(data), limit)
        return data

    async def publish(self, subject: str, msg: Message,
                      headers: dict[str, str] | None = None) -> None:
        await self._client().publish(subject, self._frame(msg),
                                     headers=self.propagation.inject(headers))

    async def request(self, subject: str, msg: Message, timeout: float, *expected: type[M],
                      headers: dict[str, str] | None = None) -> M:
        """Send `msg`, wait for one reply of a kind in `expected`; typed errors as above."""
        if not self.connected:
            raise NotConnected(f"{self.name}: no NATS connection")
        try:
            reply = await self._client().request(
                subject, self._frame(msg), timeout=timeout,
                headers=self.propagation.inject(headers))
        except nats.errors.NoRespondersError:
            raise NoResponders(f"no service listens on {subject}") from None
        except nats.errors.TimeoutError:
            raise RequestTimeout(f"no reply on {subject} within {timeout:g}s") from None
        answer = wire.decode(reply.data, *expected, ErrorReply)
        if isinstance(answer, ErrorReply):
            raise RemoteError(answer)
        return answer  # type: ignore[return-value]

    # -- serving ---------------------------------------------------------------------------

    async def serve(self, subject: str, kinds: tuple[type[Message], ...], handler: Handler,
                    queue: str = "", max_concurrency: int = 64,
                    through_drain: bool = False, polls: bool = True) -> Subscription:
        """Run `handler(message, raw)` for each frame on `subject`, at most N at once.
        `through_drain`: keep listening while draining (cancels, stats), until close.
        `polls=False`: its frames do not keep the loop polling (kvmesh/nats_client.py)."""
        limit = asyncio.Semaphore(max_concurrency)

        async def on_msg(raw: Msg) -> None:  # from the connection's reader: must not block
            waiting = len(self._inflight) - max_concurrency >= MAX_WAITING
            task = asyncio.create_task(self._refuse(raw) if waiting else
                                       self._handle(handler, kinds, raw, limit))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

        sub = await self._client().subscribe(subject, queue=queue, cb=on_msg, direct=True,
                                             polls=polls)
        if not through_drain:
            self._subs.append(sub)
        return sub

    async def _handle(self, handler: Handler, kinds: tuple[type[Message], ...], raw: Msg,
                      limit: asyncio.Semaphore) -> None:
        try:
            message = wire.decode(raw.data, *kinds)
        except WireError as exc:
            log.warning("%s: bad frame on %s: %s", self.name, raw.subject, exc)
            await self._reply(raw, ErrorReply(400, "invalid_request_error",
                                              f"undecodable frame: {exc}",
                                              code="invalid_frame"))
            return
        async with limit:
            try:
                with self.propagation.attach(raw.headers):
                    answer = await handler(message, raw)
            except Exception as exc:
                log.exception("%s: handler failed on %s", self.name, raw.subject)
                answer = ErrorReply(500, "internal_error", f"{self.name}: {exc}")
        if answer is not None:
            await self._reply(raw, answer)

    async def _refuse(self, raw: Msg) -> None:
        now = time.monotonic()
        if now - self._refused_logged >= ERROR_LOG_S:  # once a while, not per message
            self._refused_logged = now
            log.warning("%s: %d messages wait for a handler; refusing one on %s", self.name,
                        MAX_WAITING, raw.subject)
        await self._reply(raw, ErrorReply(503, "service_unavailable", f"{self.name} is overloaded",
                                          code="overloaded"))

    async def _reply(self, raw: Msg, answer: Message) -> None:
        if not raw.reply:
            return
        try:
            await self._client().publish(raw.reply, self._frame(answer))
        except PayloadTooLarge as exc:
            await self._client().publish(raw.reply, wire.encode(
                ErrorReply(413, "invalid_request_error", str(exc), code="payload_too_large")))

    @contextlib.asynccontextmanager
    async def notices(self, subject: str) -> AsyncIterator[asyncio.Event]:
        """An event that every message on `subject` sets while the block runs (what a
        message holds is not read: it says only that something happened). Without a
        connection, or should subscribing fail, nothing sets it: the caller polls anyway."""
        heard = asyncio.Event()

        async def on_msg(_raw: Msg) -> None:
            heard.set()

        sub = None
        with contextlib.suppress(Exception):  # best effort, as the contract says
            sub = await asyncio.wait_for(self._client().subscribe(subject, cb=on_msg), CLOSE_S)
        try:
            yield heard
        finally:
            if sub is not None:
                with contextlib.suppress(Exception):  # bounded, as `drain`'s
                    await asyncio.wait_for(sub.unsubscribe(), CLOSE_S)

    # -- lifetime --------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    async def _drain_connection(self) -> None:
        """Flush and drain the connection, for at most the grace period, and no longer than
        it stays up: NATS stopping with us (its launcher died) would otherwise leave the drain
        waiting for a PONG until its timeout."""
        assert self.nc is not None
        draining = asyncio.ensure_future(self.nc.drain())
        lost = asyncio.ensure_future(self._lost.wait())
        await asyncio.wait({draining, lost}, timeout=self.grace_period,
                           return_when=asyncio.FIRST_COMPLETED)
        for task in (draining, lost):
            task.cancel()
        await asyncio.gather(draining, return_exceptions=True)  # its error: we close anyway

    async def run_until_stopped(self) -> None:
        """Serve until SIGTERM/SIGINT (or `stop()`), then drain as the module doc says."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stop.set)
        await self._stop.wait()
        await self.drain()

    async def drain(self) -> None:
        self.draining = True
        log.info("%s: draining (%d in flight)", self.name, len(self._inflight))
        for sub in self._subs:
            with contextlib.suppress(Exception):  # bounded: a lost connection must not hang exit
                await asyncio.wait_for(sub.unsubscribe(), CLOSE_S)
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=self.grace_period)
        for hook in self.on_drain:
            try:  # a hook may wait out the grace period itself: leave it time to clean up after
                await asyncio.wait_for(hook(), timeout=self.grace_period + HOOK_SLACK_S)
            except Exception:
                log.exception("%s: drain hook failed", self.name)
        if self.nc is not None and not self.nc.is_closed:
            if self.nc.is_connected:  # a lost connection has nothing to drain: just close
                await self._drain_connection()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.nc.close(), CLOSE_S)
