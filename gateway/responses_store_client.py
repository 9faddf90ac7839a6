"""The gateway's side of the `/v1/responses` store (cache/responses_store.py), over NATS.

Contract: `put`, `get`, `delete`, `purge`, `append_events` and `events` answer as the store
does, or raise `ApiError`: the store's own errors as they are (404 `response_not_found`, 409
`event_gap`, 413 `response_too_large`, also for a record over the NATS max payload), and 503
`store_unavailable` with Retry-After when no store answers within `store_timeout` (no cache
actor, NATS down) or the store's Redis is down. A caller never waits longer than
`store_timeout`. `settled` reads a record whose generating gateway crashed as `failed`.
`until_answered` tries a change again through a store outage, for changes a retry cannot
make twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web

from gateway.errors import ApiError
from gateway.mesh_client import MeshClient
from gateway.responses_shape import response_error
from kvmesh import wire
from kvmesh.actor import MeshError, PayloadTooLarge, RemoteError
from kvmesh.wire import (
    Message,
    ResponseAck,
    ResponseDelete,
    ResponseEvents,
    ResponseEventsGet,
    ResponseEventsPut,
    ResponseFound,
    ResponseGet,
    ResponsePut,
    ResponsesPurge,
    ResponsesPurged,
    StoredResponse,
)

log = logging.getLogger("kvmesh.gateway.responses")


class ResponsesStoreClient:
    def __init__(self, actor: MeshClient, timeout: float, retry_after: float) -> None:
        self.actor = actor
        self.timeout = timeout
        self.retry_after = retry_after

    @property
    def generator(self) -> str:
        """What an `in_progress` record this process stores names as its generator."""
        return self.actor.inbox

    def orphaned(self, rec: StoredResponse) -> bool:
        """`rec` is in progress at a gateway process that crashed: nobody will finish it."""
        return rec.status == "in_progress" and bool(rec.gateway) \
            and self.actor.gateway_gone(rec.gateway)

    async def settled(self, tenant: str, rec: StoredResponse) -> StoredResponse:
        """`rec`, or, when the gateway process generating it crashed (it would stay in_progress
        for good), the same response `failed`: stored so (a delete since still sticks, the
        store only replaces a record it holds) and returned."""
        if not self.orphaned(rec):
            return rec
        body = json.loads(rec.body)
        body.update(status="failed", completed_at=None, error=response_error(
            None, "the gateway generating this response stopped before it finished"))
        failed = dataclasses.replace(rec, status="failed", body=json.dumps(body), gateway="")
        try:
            await self.put(tenant, failed, -1)  # for the time the record has left
        except ApiError as err:
            log.warning("could not mark %s failed in the store: %s", rec.id, err)
        return failed

    async def put(self, tenant: str, record: StoredResponse, ttl: float) -> None:
        await self._ask(wire.RESPONSES_PUT, ResponsePut(tenant, record, ttl), ResponseAck)

    async def get(self, tenant: str, response_id: str, chain: bool = False
                  ) -> list[StoredResponse]:
        """The stored response (with `chain`: its whole conversation, oldest first)."""
        found = await self._ask(wire.RESPONSES_GET, ResponseGet(tenant, response_id, chain),
                                ResponseFound)
        assert isinstance(found, ResponseFound)
        return found.records

    async def append_events(self, tenant: str, response_id: str, first: int,
                            events: list[bytes], ttl: float) -> None:
        """Log a resumable stream's events (cache/response_events.py)."""
        await self._ask(wire.RESPONSES_EVENTS_PUT,
                        ResponseEventsPut(tenant, response_id, first, events, ttl), ResponseAck)

    async def events(self, tenant: str, response_id: str, after: int) -> ResponseEvents:
        """The record as it stands and the logged events numbered after `after`."""
        found = await self._ask(wire.RESPONSES_EVENTS_GET,
                                ResponseEventsGet(tenant, response_id, after), ResponseEvents)
        assert isinstance(found, ResponseEvents)
        return found

    async def delete(self, tenant: str, response_id: str) -> None:
        await self._ask(wire.RESPONSES_DELETE, ResponseDelete(tenant, response_id), ResponseAck)

    async def purge(self, tenant: str) -> int:
        """Delete every stored response of `tenant`; how many there were."""
        done = await self._ask(wire.RESPONSES_PURGE, ResponsesPurge(tenant), ResponsesPurged)
        assert isinstance(done, ResponsesPurged)
        return done.deleted

    async def _ask(self, subject: str, msg: Message, expected: type[Message]) -> Message:
        return await ask_store(self.actor, subject, msg, self.timeout, expected, ApiError(
            413, "the response is too large to store", code="response_too_large"), ApiError(
            503, "the responses store is unavailable (it did not answer); retry, or send "
            "store: false", "service_unavailable", param="store", code="store_unavailable",
            retry_after=self.retry_after))


async def ask_store(actor: MeshClient, subject: str, msg: Message, timeout: float,
                    expected: type[Message], too_large: ApiError,
                    unavailable: ApiError) -> Message:
    """Ask a store of the cache actor: its answer, its `ErrorReply` as an `ApiError`,
    `too_large` (with the reason) for a request over the NATS max payload, `unavailable`
    when it does not answer within `timeout` (what failed goes to the log only)."""
    try:
        return await actor.request(subject, msg, timeout, expected)
    except RemoteError as exc:
        raise ApiError.from_reply(exc.reply) from None
    except PayloadTooLarge as exc:
        raise dataclasses.replace(too_large, message=f"{too_large.message}: {exc}") from None
    except MeshError as exc:
        log.warning("%s: the store did not answer: %s", subject, exc)
        raise unavailable from None


T = TypeVar("T")


async def until_answered(attempt: Callable[[], Awaitable[T]], bound_s: float, what: str) -> T:
    """`attempt()`, tried again while the store does not answer (503), 0.25 s apart doubling
    to 8 s, for up to `bound_s`; its other errors (the store's refusals) end it at once. For
    changes a retry cannot make twice (a record replaced, items the store adds once), so an
    attempt that landed unanswered changes nothing when tried again."""
    delay, deadline = 0.25, time.monotonic() + bound_s
    while True:
        try:
            return await attempt()
        except ApiError as err:
            if err.status != 503 or time.monotonic() + delay > deadline:
                raise
            log.info("%s: the store did not answer; retrying in %.2f s", what, delay)
        await asyncio.sleep(delay)
        delay = min(8.0, 2 * delay)


STORE = web.AppKey("responses_store", ResponsesStoreClient)
