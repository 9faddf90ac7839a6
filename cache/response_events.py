"""The event logs of resumable Response streams, beside the stored responses they belong to.

A background response created with `stream: true` logs its stream's events (each framed as it
was sent, numbered by its `sequence_number`), so that any gateway process can stream it again
from any point (`GET /v1/responses/{id}?stream=true&starting_after=N`) while it runs and after.

Contract (subjects in `kvmesh.wire`, queue group "cache", served by the cache actor):
- `ResponseEventsPut(tenant, id, first, events, ttl)` on `RESPONSES_EVENTS_PUT` appends
  `events` as numbers `first`, `first + 1`, ... and answers `ResponseAck`; those of them
  already logged (an earlier try whose answer was lost) are not logged twice. It is 404 when
  the response is not stored (deleted: nothing will read its log), 409 `event_gap` when the
  log ends before `first` (an earlier append was lost: the log must never skip a number),
  413 `response_too_large` when the log would outgrow `responses_max_bytes`. An append that
  landed is told on `responses_events_added(id)` (a `ResponseAck`, best effort), for the
  readers waiting on the log.
- `ResponseEventsGet(tenant, id, after)` on `RESPONSES_EVENTS_GET` answers `ResponseEvents`:
  the record as it stands (no body, input items or messages) and the events numbered after
  `after`, at most `PAGE_EVENTS` of them and about `PAGE_BYTES` (always at least one, if
  any), `more` when more are stored after those. 404 as `ResponseGet`.
- The log lives as long as its record (the same TTL) and counts toward the tenant's bytes:
  an append evicts the tenant's oldest responses past `responses_tenant_bytes` as a put does.
  It goes when the record is deleted, evicted or purged (cache/responses_store.py).
- Redis down or slow is 503 `store_unavailable`, as for the store.
"""

from __future__ import annotations

import dataclasses
import logging

from cache.responses_store import (
    EVICT,
    RESPONSE_ID,
    ResponseStore,
    events_key,
    not_found,
    prefix,
    record_keys,
)
from kvmesh import wire
from kvmesh.wire import (
    ErrorReply,
    Message,
    ResponseAck,
    ResponseEvents,
    ResponseEventsGet,
    ResponseEventsPut,
)

log = logging.getLogger(__name__)
PAGE_EVENTS = 1024  # events in one answer
PAGE_BYTES = 256 * 1024  # about the bytes of one answer (well under NATS' 1 MiB)

# KEYS: event log, record, index, sizes, bytes. ARGV: id, first, ttl ms, log cap, tenant cap,
# entry prefix, events... Events an earlier try of the same append stored (its answer lost)
# are not stored twice. Returns the evicted count, -1 no record, -2 a gap, -3 over the cap.
_APPEND = EVICT + """
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
local first, len = tonumber(ARGV[2]), redis.call('LLEN', KEYS[1])
if len < first or len > first + #ARGV - 6 then return -2 end
local from, n = 7 + len - first, 0
for i = from, #ARGV do n = n + string.len(ARGV[i]) end
local field = ARGV[1] .. ':events'
if tonumber(redis.call('HGET', KEYS[4], field) or '0') + n > tonumber(ARGV[4]) then
  return -3
end
for i = from, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('HINCRBY', KEYS[4], field, n)
local total = redis.call('INCRBY', KEYS[5], n)
return evict(KEYS[3], KEYS[4], KEYS[5], ARGV[6], ARGV[1], total, tonumber(ARGV[5]))
"""


class ResponseEventLogs:
    """The event-log handlers, on the store's actor and Redis client (see the module doc)."""

    def __init__(self, store: ResponseStore) -> None:
        self.store = store
        self._append_script = store.redis.register_script(_APPEND)

    async def start(self) -> None:
        store, n = self.store, self.store.cfg.max_concurrency
        await store.actor.serve(wire.RESPONSES_EVENTS_PUT, (ResponseEventsPut,),
                                store.guard(self._put), queue="cache", max_concurrency=n)
        await store.actor.serve(wire.RESPONSES_EVENTS_GET, (ResponseEventsGet,),
                                store.guard(self._get), queue="cache", max_concurrency=n)

    async def _put(self, msg: Message) -> Message:
        assert isinstance(msg, ResponseEventsPut)
        if not RESPONSE_ID.fullmatch(msg.id):
            return not_found(msg.id)
        cfg = self.store.cfg
        ttl_ms = min(int((msg.ttl or cfg.responses_ttl) * 1000), 1 << 53)
        done = await self.store.redis_call(self._append_script(
            keys=[events_key(msg.tenant, msg.id), *record_keys(msg.tenant, msg.id)],
            args=[msg.id, msg.first, ttl_ms, cfg.responses_max_bytes,
                  cfg.responses_tenant_bytes, prefix(msg.tenant), *msg.events]))
        if done == -1:
            return not_found(msg.id)
        if done == -2:
            return ErrorReply(409, "invalid_request_error", f"the event log of {msg.id} does "
                              f"not end before event {msg.first}", code="event_gap")
        if done == -3:
            return ErrorReply(413, "invalid_request_error", f"the event log of {msg.id} would "
                              f"outgrow {cfg.responses_max_bytes} bytes",
                              code="response_too_large")
        await self._tell(msg.id)
        return ResponseAck(msg.id)

    async def _tell(self, response_id: str) -> None:
        """Tell the readers of `response_id`'s log that it grew (they poll too, more slowly,
        so a notice lost is late, never missed)."""
        try:
            await self.store.actor.publish(wire.responses_events_added(response_id),
                                           ResponseAck(response_id))
        except Exception as exc:  # the append landed: its answer must not say otherwise
            log.debug("could not tell of new events of %s: %s", response_id, exc)

    async def _get(self, msg: Message) -> Message:
        assert isinstance(msg, ResponseEventsGet)
        rec = await self.store.load(msg.tenant, msg.id)
        if rec is None:
            return not_found(msg.id)
        first = max(msg.after + 1, 0)
        fetched = await self.store.redis_call(self.store.redis.lrange(
            events_key(msg.tenant, msg.id), first, first + PAGE_EVENTS - 1))
        events, size = [], 0
        for event in fetched:
            if events and size + len(event) > PAGE_BYTES:
                break
            events.append(bytes(event))
            size += len(event)
        slim = dataclasses.replace(rec, body="", input_items="", messages=[])
        return ResponseEvents(slim, events, more=len(events) < len(fetched)
                              or len(fetched) == PAGE_EVENTS)
