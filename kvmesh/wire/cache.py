"""The cache actor's messages: the result cache and the `/v1/responses` store.

Gateways ask the cache actor (cache/service.py for the result cache, cache/responses_store.py
for stored responses), queue group "cache". `CACHE_STATS` answers the cache's counters.
`RESPONSES_CANCEL` goes from gateway to gateway: every gateway process hears it, the one that
runs the background response answers (gateway/responses_background.py). `RESPONSES_EVENTS_*`
log a background stream's events, read them back, and tell readers of new ones
(cache/response_events.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from kvmesh.wire import codec
from kvmesh.wire.generation import ChatMessage, Chunk
from kvmesh.wire.message import Message

CACHE_GET = "kvmesh.cache.get"  # CacheGet -> CacheHit | CacheMiss
CACHE_PUT = "kvmesh.cache.put"  # CachePut, no answer
CACHE_STATS = "kvmesh.cache.stats"  # Ping -> CacheStats
RESPONSES_PUT = "kvmesh.responses.put"  # ResponsePut -> ResponseAck | ErrorReply(503, 413)
RESPONSES_GET = "kvmesh.responses.get"  # ResponseGet -> ResponseFound | ErrorReply(404, 503)
RESPONSES_DELETE = "kvmesh.responses.delete"  # ResponseDelete -> ResponseAck | ErrorReply
RESPONSES_PURGE = "kvmesh.responses.purge"  # ResponsesPurge -> ResponsesPurged | ErrorReply(503)
RESPONSES_CANCEL = "kvmesh.responses.cancel"  # ResponseCancel -> ResponseAck (from its gateway)
RESPONSES_EVENTS_PUT = "kvmesh.responses.events.put"  # ResponseEventsPut -> ResponseAck | Error
RESPONSES_EVENTS_GET = "kvmesh.responses.events.get"  # ResponseEventsGet -> ResponseEvents | Error
# ResponseAck, no answer: the cache actor logged events of that response (a resumed stream
# reads the log when told, instead of polling it)
RESPONSES_EVENTS_ADDED = "kvmesh.responses.events.added.*"


def responses_events_added(response_id: str) -> str:
    """The subject that tells of events logged for `response_id` (a `resp_` id)."""
    return RESPONSES_EVENTS_ADDED.removesuffix("*") + response_id


@dataclass
class CacheGet(Message):
    """Result-cache lookup. With `lead_wait` > 0 a miss whose key another caller is computing
    waits up to that long for its result (single-flight); with `wait` False it answers
    `CacheMiss(busy=True)` at once instead (a gateway that routed the request meanwhile drops
    that route, then asks again waiting)."""

    KIND: ClassVar[str] = "cache_get"
    key: str
    lead_wait: float = 0.0
    part: int = 0  # > 0: just that part of a stored answer (see CacheHit), no waiting
    wait: bool = True


@dataclass
class CacheHit(Message):
    """A stored answer, or part `part` of one stored in `parts` parts (an answer over the NATS
    max payload travels and is stored in parts; the reader asks for parts 1.. by `part`)."""

    KIND: ClassVar[str] = "cache_hit"
    key: str
    chunks: list[Chunk]
    part: int = 0
    parts: int = 1


@dataclass
class CacheMiss(Message):
    """`lead`: the caller holds the key's single-flight lease and should compute and put.
    `busy`: another caller holds it and the get said not to wait (`CacheGet.wait`)."""

    KIND: ClassVar[str] = "cache_miss"
    key: str
    lead: bool = False
    busy: bool = False


@dataclass
class CachePut(Message):
    """Store a finished result (`chunks` empty: give the lease up without storing). An answer
    over the NATS max payload is put in `parts` messages, `part` 0, 1, ...; the lease is freed
    when the last of them is stored. `renew`: nothing is stored or freed; the leader, still
    computing, extends its lease to a full `lease` again."""

    KIND: ClassVar[str] = "cache_put"
    key: str
    chunks: list[Chunk]
    part: int = 0
    parts: int = 1
    renew: bool = False


@dataclass
class CacheStats(Message):
    KIND: ClassVar[str] = "cache_stats"
    hits: int = 0
    misses: int = 0
    leads: int = 0
    waited_hits: int = 0
    puts: int = 0
    errors: int = 0



codec.register(CacheGet, CacheHit, CacheMiss, CachePut, CacheStats)


# -- responses store ---------------------------------------------------------------------------


@dataclass
class StoredResponse(Message):
    """One stored `/v1/responses` answer. `body` is the Response object as JSON text (what a
    retrieve returns) and `input_items` the list of its input items as JSON text (kept as text,
    like `ToolDef.parameters`, so the wire stays typed whatever they hold). `messages` is this
    turn as chat history: its input messages, then its output (instructions excluded: they
    are not carried over to a continuation). Redis holds it as one frame."""

    KIND: ClassVar[str] = "stored_response"
    id: str
    created_at: int
    status: str  # in_progress, completed, incomplete, failed, cancelled (OpenAI's statuses)
    body: str
    input_items: str
    messages: list[ChatMessage]
    previous_response_id: str | None = None
    gateway: str = ""  # in_progress: the inbox of the gateway process generating it
    logged: bool = False  # its stream's events are logged (background with stream): resumable
    last_event: int = -1  # finished, streamed: the number of its stream's last event


@dataclass
class ResponsePut(Message):
    """Store (or replace) `record` under `tenant` for `ttl` seconds (0: the store's default;
    below 0: what the stored record has left)."""

    KIND: ClassVar[str] = "response_put"
    tenant: str
    record: StoredResponse
    ttl: float = 0.0


@dataclass
class ResponseGet(Message):
    """Fetch a tenant's stored response; with `chain`, it and every response it continues
    (`previous_response_id`), oldest first."""

    KIND: ClassVar[str] = "response_get"
    tenant: str
    id: str
    chain: bool = False


@dataclass
class ResponseDelete(Message):
    KIND: ClassVar[str] = "response_delete"
    tenant: str
    id: str


@dataclass
class ResponseFound(Message):
    KIND: ClassVar[str] = "response_found"
    records: list[StoredResponse]


@dataclass
class ResponseAck(Message):
    """A put was stored, or a delete removed `id`."""

    KIND: ClassVar[str] = "response_ack"
    id: str


@dataclass
class ResponseCancel(Message):
    """Stop the background response `id` of `tenant` that the gateway process reading inbox
    `gateway` runs; that process answers `ResponseAck` once it has ended (its last state
    stored), the others stay silent."""

    KIND: ClassVar[str] = "response_cancel"
    tenant: str
    id: str
    gateway: str


@dataclass
class ResponseEventsPut(Message):
    """Append `events` (each one stream event, framed as sent), numbered `first`, `first + 1`,
    ..., to the event log of `tenant`'s response `id`, kept `ttl` seconds (0: the store's
    default)."""

    KIND: ClassVar[str] = "response_events_put"
    tenant: str
    id: str
    first: int
    events: list[bytes]
    ttl: float = 0.0


@dataclass
class ResponseEventsGet(Message):
    """The logged events of `tenant`'s response `id` numbered after `after` (-1: all)."""

    KIND: ClassVar[str] = "response_events_get"
    tenant: str
    id: str
    after: int = -1


@dataclass
class ResponseEvents(Message):
    """The record as it stands (no body, input items or messages) and the next logged
    events; `more`: a page was full, more are stored."""

    KIND: ClassVar[str] = "response_events"
    record: StoredResponse
    events: list[bytes]
    more: bool = False


@dataclass
class ResponsesPurge(Message):
    """Delete every stored response of `tenant` (the tenant is being deleted)."""

    KIND: ClassVar[str] = "responses_purge"
    tenant: str


@dataclass
class ResponsesPurged(Message):
    """A purge removed `deleted` stored responses."""

    KIND: ClassVar[str] = "responses_purged"
    deleted: int


codec.register(
    StoredResponse, ResponsePut, ResponseGet, ResponseDelete, ResponseFound, ResponseAck,
    ResponseCancel, ResponseEventsPut, ResponseEventsGet, ResponseEvents, ResponsesPurge,
    ResponsesPurged)
