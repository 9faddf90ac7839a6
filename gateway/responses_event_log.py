"""Resumable Response streams: the event log a background stream writes, and its readers.

A background response created with `stream: true` logs every event it streams, framed as sent
(`event: <type>` and `data: <json>`), in the store (cache/response_events.py). Any gateway
process can then stream it again: `GET /v1/responses/{id}?stream=true&starting_after=N` sends
the events numbered after N (all of them without it), then those still to come, and ends
after the last (`response.completed`, `response.incomplete` or `response.failed`), as
OpenAI's resumable background streams do.

Contract:
- `EventLogWriter.add(frames)` queues a batch without waiting; at most one append is in flight
  at a time and whatever queued meanwhile goes in the next, so a log costs one store request
  per round trip however fast the engine writes. Once an append fails for good, logging stops
  (the log never skips a number); `close()` waits for what was added.
- `resume(...)` reads the log when the store tells of new events, and at least every
  `POLL_S` (at once while pages come back full). Once the record has ended, the log's last
  event is waited for up to `FINAL_WAIT_S`; a log without
  one (logging stopped, or the generating gateway crashed) ends with the record's own final
  event: `response.completed`, `response.incomplete` or `response.failed` carrying the stored
  response, numbered as it was streamed (a `cancelled` one ends with no event, as its live
  stream does). A client that has the stream's last event gets nothing more. A response
  deleted meanwhile, or a store (or NATS) that answers 503 for longer than `OUTAGE_S`, ends
  the stream with an `error` event, numbered after the last event sent (the reader's own,
  not the log's: a client resumes after the last event it had before it); a shorter outage
  (NATS restarting) is read through.
- The writer tries an append the store does not answer again (the store keeps no event
  twice) for up to `RETRY_S`, with what came meanwhile; an append carries at most about
  `APPEND_BYTES`. Logging stops at a longer store outage, at a refusal, or when the log
  outgrows `responses_max_bytes`.
- A response not logged (not made with `background` and `stream`) is 400 naming `stream`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from aiohttp import web

from gateway.errors import ApiError, bad_field
from gateway.responses_store_client import ResponsesStoreClient
from gateway.sse import SseWriter, typed_event
from kvmesh import wire
from kvmesh.wire import StoredResponse

log = logging.getLogger("kvmesh.gateway.responses")
# A reader's longest wait between reads of a log that has nothing new: it reads as soon as
# the store tells of new events (`responses_events_added`); this covers a notice lost (NATS
# restarting) and an end the log does not show (a cancel, a crashed gateway).
POLL_S = 0.5
RETRY_S = 60.0  # how long a writer tries an append the store does not answer (503)
RETRY_FIRST_S, RETRY_MAX_S = 0.25, 4.0  # its wait between tries, doubling
APPEND_BYTES = 256 * 1024  # about the most one append carries (well under NATS' 1 MiB)
MAX_SEQUENCE = 1 << 53  # no stream numbers an event past this (JSON's exact integers)
FINAL_WAIT_S = 1.0  # how long a reader waits for the last event of a response that ended
OUTAGE_S = 30.0  # how long a reader reads on through the store (or NATS) answering 503
_LAST = ("completed", "incomplete", "failed")  # the statuses whose event ends a stream
_ENDS = tuple(f"event: response.{status}\n".encode() for status in _LAST)


class EventLogWriter:
    """The event log of one background stream (see the module contract)."""

    def __init__(self, store: ResponsesStoreClient, tenant: str, response_id: str,
                 ttl: float) -> None:
        self.store, self.tenant, self.id, self.ttl = store, tenant, response_id, ttl
        self.pending: list[bytes] = []
        self.next = 0  # the number of pending[0]
        self.stopped = False
        self._flushing: asyncio.Task[None] | None = None

    def add(self, frames: list[bytes]) -> None:
        if self.stopped or not frames:
            return
        self.pending += frames
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.ensure_future(self._flush())

    async def close(self) -> None:
        """Return once every added event is logged, or logging stopped."""
        while self._flushing is not None and not self._flushing.done():
            await asyncio.shield(self._flushing)

    async def _flush(self) -> None:
        delay, failing_since = RETRY_FIRST_S, None
        while self.pending and not self.stopped:
            batch = _batch(self.pending)
            self.pending = self.pending[len(batch):]
            try:
                await self.store.append_events(self.tenant, self.id, self.next, batch, self.ttl)
                self.next += len(batch)
                delay, failing_since = RETRY_FIRST_S, None
            except ApiError as err:
                now = time.monotonic()
                failing_since = failing_since or now
                if err.status != 503 or now - failing_since > RETRY_S:
                    log.warning("the event log of %s stops at event %d: %s", self.id,
                                self.next, err)
                    self.stopped, self.pending = True, []
                    return
                self.pending = batch + self.pending  # tried again, with what came meanwhile
                await asyncio.sleep(delay)
                delay = min(2 * delay, RETRY_MAX_S)


def _batch(frames: list[bytes]) -> list[bytes]:
    """The first of `frames`, up to `APPEND_BYTES` (at least one)."""
    size = 0
    for i, frame in enumerate(frames):
        size += len(frame)
        if i and size > APPEND_BYTES:
            return frames[:i]
    return frames


def resume_query(request: web.Request) -> tuple[bool, int]:
    """`stream` and `starting_after` of a retrieve (query parameters): whether to stream, and
    the number of the last event the client has (-1: none)."""
    stream = request.query.get("stream", "false")
    if stream not in ("true", "false"):
        raise bad_field("stream", "must be true or false")
    if request.query.get("include_obfuscation", "false") != "false":  # as create refuses it
        raise bad_field("include_obfuscation", "obfuscation is not supported; send false or "
                        "leave it out")
    after = request.query.get("starting_after")
    if after is None:
        return stream == "true", -1
    if stream != "true":
        raise bad_field("starting_after", "is only for stream=true")
    if not (after.isascii() and after.isdigit()) or int(after) > MAX_SEQUENCE:
        raise bad_field("starting_after", f"must be an integer from 0 to {MAX_SEQUENCE}")
    return True, int(after)


async def resume(request: web.Request, store: ResponsesStoreClient, tenant: str,
                 rec: StoredResponse, after: int, write_timeout: float) -> web.StreamResponse:
    """Stream `rec`'s logged events numbered after `after`, then those to come (see the module
    contract)."""
    if not rec.logged:
        raise bad_field("stream", f"{rec.id} was not created with background and stream; it "
                        "has no stream to resume")
    sse = SseWriter(request, write_timeout)
    await sse.start()
    async with store.actor.notices(wire.responses_events_added(rec.id)) as added:
        await _follow(sse, store, tenant, rec.id, after, added)
    await sse.response.write_eof()
    return sse.response


async def _follow(sse: SseWriter, store: ResponsesStoreClient, tenant: str, response_id: str,
                  after: int, added: asyncio.Event) -> None:
    """Write the log's events after `after` as they come (`added`: set when events are
    logged), and its last event, to `sse` (see the module contract)."""
    ended_at = failing_since = None
    while True:
        added.clear()  # before the read: a notice during it makes the next wait short
        try:
            page = await store.events(tenant, response_id, after)
            if page.events:
                await sse.write(b"".join(page.events))
                after += len(page.events)
                if _ends(page.events[-1]):
                    break
                if page.more:
                    continue
            ended = page.record
            if ended.status != "in_progress" and 0 <= ended.last_event <= after:
                break  # the client has the last event
            if ended.status != "in_progress" or store.orphaned(ended):
                ended_at = ended_at or time.monotonic()
                if time.monotonic() - ended_at >= FINAL_WAIT_S:
                    if last := await _last_event(store, tenant, response_id, after):
                        await sse.write(last)
                    break
            failing_since = None
        except ApiError as err:
            now = time.monotonic()
            failing_since = failing_since or now
            if err.status != 503 or now - failing_since > OUTAGE_S:
                await sse.write(_error(after + 1, err))
                break  # deleted, or the store (or NATS) out for longer than a restart
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(added.wait(), POLL_S)


async def _last_event(store: ResponsesStoreClient, tenant: str, response_id: str,
                      after: int) -> bytes:
    """The event that ends the stream of a response that ended, its log lacking it (for a
    client that has the events up to `after`), made from the record: numbered as it was
    streamed (`last_event`), or, where the stream never had one (its gateway crashed: the
    record reads `failed`), next after `after`. None for one the client has, or for a
    `cancelled` one, whose live stream ends with none."""
    (rec,) = await store.get(tenant, response_id)
    rec = await store.settled(tenant, rec)
    if rec.status not in _LAST or 0 <= rec.last_event <= after:
        return b""
    return typed_event({"type": f"response.{rec.status}",
                        "sequence_number": rec.last_event if rec.last_event >= 0 else after + 1,
                        "response": json.loads(rec.body)})


def _ends(frame: bytes) -> bool:
    return frame.startswith(_ENDS)


def _error(seq: int, err: ApiError) -> bytes:
    return typed_event({"type": "error", "sequence_number": seq, "code": err.code or err.type,
                        "message": err.message, "param": None})
