"""nats-py's client with two event-loop hand-offs taken out of a message's way.

At one stream each NATS leg of a first token is a wake-up of an idle process, and nats-py adds
a loop iteration at each end of it: a publish only queues its frame for a flusher task, and a
message read from the socket is queued for a task per subscription that then runs the
callback. On a host whose idle processes wake slowly, each of those iterations costs tens of
microseconds (bench/nats_client_leg.py; docs/BENCHMARKS.md, issue 12, the thirty-first and
thirty-second sessions). `NatsClient` (`FastClient`) keeps nats-py for everything else
(connecting, reconnecting, requests, headers, drain) and changes only these two steps.

Contract:
- A publish writes its frame to the socket at once (with any frames queued before it, in
  order) while the connection is up, its flusher runs and the socket's write buffer holds less
  than `WRITE_BUFFER_LIMIT`; otherwise nats-py's own path queues it for the flusher, whose
  `drain` and pending-size limit keep the backpressure they always had. A write that fails
  (the connection closing before nats-py noticed) leaves the frames queued, as nats-py would.
- `subscribe(..., direct=True)`: the callback runs from the connection's reader as each message
  is parsed, in order, instead of from the subscription's task. It must not block: the
  connection's other messages, replies to this process's requests among them, wait behind it.
  An error it raises goes to the client's error callback, as nats-py's does. A direct
  subscription has no pending queue, so nats-py's slow-consumer limits do not apply to it.
  The subscription nats-py makes for the replies to `request` is direct too (its callback
  only resolves the waiting request's future).
- Every message `FastClient` reads keeps the process's loop polling for a while
  (`busy_poll.touch`, kvmesh/busy_poll.py), but those of a subscription made with
  `polls=False`: messages that come on their own clock (heartbeats) would keep an idle
  process polling for ever.
- Both rest on nats-py internals (checked against 2.16). If the installed nats-py lacks the
  hooks this module overrides, with the parameters it expects, the client is nats-py's own,
  unchanged (`FAST` is False, `NatsClient` is `PlainClient`; a warning says so once).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.aio.transport import TcpTransport

from kvmesh import busy_poll

WRITE_BUFFER_LIMIT = 1 << 20  # bytes the socket may hold unsent before publishes queue again

Callback = Callable[[Msg], Awaitable[None]]
log = logging.getLogger(__name__)


def _has_hooks() -> bool:
    """nats-py still has the internals the overrides below stand on, as they were."""
    expected = {"_process_msg": ["self", "sid", "subject", "reply", "data", "headers"],
                "_flush_pending": ["self", "force_flush"],
                "_build_message": ["self", "sid", "subject", "reply", "data", "headers"],
                "_process_headers": ["self", "headers"]}
    for name, params in expected.items():
        fn = getattr(Client, name, None)
        if fn is None or list(inspect.signature(fn).parameters) != params:
            log.warning("nats-py has changed (%s): kvmesh uses its client unchanged", name)
            return False
    return all(hasattr(Client(), a) for a in ("_subs", "_pending", "_pending_data_size",
                                                "_transport", "_flusher_task", "stats"))


class PlainClient(Client):
    """nats-py's client as it is; `direct` and `polls` are accepted and change nothing (its
    messages never keep the loop polling)."""

    async def subscribe(self, subject: str, queue: str = "", cb: Callback | None = None,
                        *args: Any, direct: bool = False, polls: bool = True,
                        **kwargs: Any) -> Subscription:
        return await super().subscribe(subject, queue, cb, *args, **kwargs)


class FastClient(Client):
    """See the module contract."""

    def __init__(self) -> None:
        super().__init__()
        self._direct: set[int] = set()  # sids whose callback runs from the reader
        self._quiet: set[int] = set()  # sids whose messages leave the loop free to sleep

    async def subscribe(self, subject: str, queue: str = "", cb: Callback | None = None,
                        *args: Any, direct: bool = False, polls: bool = True,
                        **kwargs: Any) -> Subscription:
        sub = await super().subscribe(subject, queue, cb, *args, **kwargs)
        if not polls:
            self._quiet.add(sub._id)
        if direct or cb == self._request_sub_callback:  # requests' replies: sets a future
            assert cb is not None, "a direct subscription needs a callback"
            self._direct.add(sub._id)
        return sub

    async def _process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes,
                           headers: bytes) -> None:
        if sid not in self._quiet:
            busy_poll.touch()
        sub = self._subs.get(sid)
        if sub is None or sid not in self._direct or sub._max_msgs > 0:
            self._direct.discard(sid)  # gone, or ending after max_msgs: nats-py's path
            await super()._process_msg(sid, subject, reply, data, headers)
            return
        self.stats["in_msgs"] += 1
        self.stats["in_bytes"] += len(data)
        sub._received += 1
        msg = self._build_message(sid, subject, reply, data,
                                  await self._process_headers(headers))
        if not msg:
            return
        try:
            await sub._cb(msg)
        except Exception as exc:  # as nats-py's subscription task reports it
            await self._error_cb(exc)

    async def _flush_pending(self, force_flush: bool = False) -> Any:  # callers ignore it
        if force_flush or not self._writes_at_once():
            return await super()._flush_pending(force_flush)
        try:
            self._transport.writelines(self._pending)
        except (OSError, RuntimeError):  # a connection closing unnoticed: nats-py's path
            return await super()._flush_pending(force_flush)  # (its flusher or a reconnect)
        self._pending = []
        self._pending_data_size = 0
        return None

    def _writes_at_once(self) -> bool:
        transport = self._transport
        if not (self.is_connected and isinstance(transport, TcpTransport)
                and self._flusher_task is not None and not self._flusher_task.done()):
            return False
        writer = transport._io_writer
        return writer is not None and \
            writer.transport.get_write_buffer_size() < WRITE_BUFFER_LIMIT


FAST = _has_hooks()
NatsClient: type[FastClient] | type[PlainClient] = FastClient if FAST else PlainClient
