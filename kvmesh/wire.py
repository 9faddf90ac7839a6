"""The wire contract: every message a kvmesh service sends over NATS, and the subjects.

Frames are msgpack maps `{"v": SCHEMA_VERSION, "t": <kind>, <field>: <value>, ...}`. Every
message is a dataclass below; `encode` writes one, `decode` reads and validates one and raises
`WireError` (never anything else) for a frame that is not msgpack, has another schema version,
an unknown kind, a missing field or a field of the wrong type. Unknown fields are ignored so an
older reader accepts a newer writer's additions within one schema version.

Request path (see DESIGN.md): the gateway sends `GenerateRequest` to `ROUTER_GENERATE` and
gets `Accepted` (or `ErrorReply`); the router forwards it, with `prompt_token_ids` set, to
`worker_generate(id)`; the worker publishes `Chunk`s (or one `ErrorReply`) straight to the
request's `reply_to`. `Cancel` goes to `CANCEL`, which every worker hears.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar, Union

import msgpack

SCHEMA_VERSION = 1

# Subjects. Workers: one subject each for generate and stats; the rest are broadcasts.
ROUTER_GENERATE = "kvmesh.router.generate"
ROUTER_PING = "kvmesh.router.ping"
HEARTBEAT = "kvmesh.worker.heartbeat"
KV_EVENTS = "kvmesh.worker.kv_events"
CANCEL = "kvmesh.cancel"
KV_RESYNC = "kvmesh.worker.kv_resync"  # a router asks workers to resend their whole KV set
CACHE_GET = "kvmesh.cache.get"
CACHE_PUT = "kvmesh.cache.put"
CACHE_STATS = "kvmesh.cache.stats"
REQUEST_ID_HEADER = "Kvmesh-Request-Id"


def worker_generate(worker_id: str) -> str:
    return f"kvmesh.worker.{worker_id}.generate"


def worker_stats(worker_id: str) -> str:
    return f"kvmesh.worker.{worker_id}.stats"


class WireError(ValueError):
    """A frame that does not decode or validate; the message says what is wrong."""


@dataclass
class Message:
    """Base of every wire message; `KIND` is the frame's `t` tag."""

    KIND: ClassVar[str] = ""


@dataclass
class ChatMessage:
    role: str
    content: str


@dataclass(kw_only=True)
class SamplingFields:
    """The sampling parameters, declared once for every hop that carries them: the gateway's
    parsed request, `GenerateRequest` on the wire, and the result-cache key (`sampling_of`).
    The engine's `SamplingParams` validates the same names; it cannot import this module
    (the GPU machine has no msgpack)."""

    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    seed: int | None = None
    n: int = 1
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: int | None = None
    priority: int = 0  # a scheduling hint: higher is admitted first, preempted last
    cache_salt: str = ""  # roots the prefix-cache chain: only equal salts share cached blocks


def sampling_of(obj: SamplingFields) -> dict[str, Any]:
    """Every sampling field of `obj`, by name."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(SamplingFields)}


@dataclass
class GenerateRequest(Message, SamplingFields):
    """One generation. Exactly one of `prompt`, `messages`, `prompt_token_ids` is set by the
    gateway; the router sets `prompt_token_ids` (tokenising the others) before the worker sees
    it. `max_tokens` None means "the rest of the context"."""

    KIND: ClassVar[str] = "generate"
    request_id: str
    model: str
    reply_to: str
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    prompt_token_ids: list[int] | None = None
    tenant: str = ""
    session: str = ""  # session-affinity hint (the OpenAI `user` field or a header)
    exclude_workers: list[str] = field(default_factory=list)  # a retry skips these


@dataclass
class Accepted(Message):
    """A worker admitted the request; chunks will follow on its `reply_to`. The router adds
    `prefix_overlap`: full prompt blocks it expected the worker to hold in its KV cache."""

    KIND: ClassVar[str] = "accepted"
    request_id: str
    worker_id: str
    prompt_tokens: int
    prefix_overlap: int = 0


@dataclass
class TopLogprob:
    token_id: int
    token: str
    logprob: float


@dataclass
class Logprob:
    token_id: int
    token: str
    logprob: float
    top: list[TopLogprob] = field(default_factory=list)


@dataclass
class UsageInfo:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0


@dataclass
class Chunk(Message):
    """One choice's delta. `seq` counts 0, 1, 2... per request across all choices, so a
    reader can restore the order; the chunk that finishes the last choice carries `usage`."""

    KIND: ClassVar[str] = "chunk"
    request_id: str
    seq: int
    index: int
    text: str
    token_ids: list[int]
    logprobs: list[Logprob] | None = None
    finish_reason: str | None = None
    usage: UsageInfo | None = None


@dataclass
class Cancel(Message):
    KIND: ClassVar[str] = "cancel"
    request_id: str


@dataclass
class Ping(Message):
    KIND: ClassVar[str] = "ping"


@dataclass
class Heartbeat(Message):
    """A worker's load, published every heartbeat interval and answered on its stats subject.
    `kv_usage` is used_blocks / num_blocks in [0, 1]."""

    KIND: ClassVar[str] = "heartbeat"
    worker_id: str
    model: str
    running: int
    waiting: int
    kv_usage: float
    num_blocks: int
    free_blocks: int
    used_blocks: int = 0
    cached_blocks: int = 0
    max_model_len: int = 0
    block_size: int = 16
    draining: bool = False
    sent_at: float = 0.0
    revision: str = ""  # the model files' identity (name, size, mtime), for result-cache keys


@dataclass
class KVEvent(Message):
    """Block hashes a worker stored or evicted since its last event. `full`: `stored` is the
    worker's whole set (an answer to `KVResync`) and replaces what a router knew. `seq` counts
    a worker's events 1, 2, 3...; a router that sees a gap asks for a resync."""

    KIND: ClassVar[str] = "kv_event"
    worker_id: str
    stored: list[int]
    evicted: list[int]
    full: bool = False
    seq: int = 0


@dataclass
class KVResync(Message):
    """Ask a worker ("" = every worker) to publish its whole KV set as a `full` KVEvent."""

    KIND: ClassVar[str] = "kv_resync"
    worker_id: str = ""


@dataclass
class CacheGet(Message):
    """Result-cache lookup. With `lead_wait` > 0 a miss whose key another caller is computing
    waits up to that long for its result (single-flight)."""

    KIND: ClassVar[str] = "cache_get"
    key: str
    lead_wait: float = 0.0
    part: int = 0  # > 0: just that part of a stored answer (see CacheHit), no waiting


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
    """`lead`: the caller holds the key's single-flight lease and should compute and put."""

    KIND: ClassVar[str] = "cache_miss"
    key: str
    lead: bool = False


@dataclass
class CachePut(Message):
    """Store a finished result (`chunks` empty: give the lease up without storing). An answer
    over the NATS max payload is put in `parts` messages, `part` 0, 1, ...; the lease is freed
    when the last of them is stored."""

    KIND: ClassVar[str] = "cache_put"
    key: str
    chunks: list[Chunk]
    part: int = 0
    parts: int = 1


@dataclass
class CacheStats(Message):
    KIND: ClassVar[str] = "cache_stats"
    hits: int = 0
    misses: int = 0
    leads: int = 0
    waited_hits: int = 0
    puts: int = 0
    errors: int = 0


@dataclass
class ErrorReply(Message):
    """An error a user may see, already in the OpenAI error shape's terms and an HTTP status."""

    KIND: ClassVar[str] = "error"
    status: int
    type: str
    message: str
    param: str | None = None
    code: str | None = None
    retry_after: float | None = None


KINDS: dict[str, type[Message]] = {
    cls.KIND: cls
    for cls in (
        GenerateRequest, Accepted, Chunk, Cancel, Ping, Heartbeat, KVEvent, ErrorReply,
        KVResync, CacheGet, CacheHit, CacheMiss, CachePut, CacheStats,
    )
}
M = TypeVar("M", bound=Message)


def encode(msg: Message) -> bytes:
    """msgpack frame of `msg` with its schema version and kind."""
    body = _to_plain(msg)
    body["v"] = SCHEMA_VERSION
    body["t"] = msg.KIND
    return msgpack.packb(body, use_bin_type=True)


def decode(data: bytes, *expected: type[M]) -> M:
    """Decode one frame; with `expected` given, its kind must be one of them. Raises WireError."""
    try:
        body = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise WireError(f"frame is not msgpack: {exc}") from None
    if not isinstance(body, dict):
        raise WireError("frame is not a map")
    if body.get("v") != SCHEMA_VERSION:
        raise WireError(f"schema version {body.get('v')!r}, expected {SCHEMA_VERSION}")
    cls = KINDS.get(body.get("t"))  # type: ignore[arg-type]
    if cls is None:
        raise WireError(f"unknown message kind {body.get('t')!r}")
    if expected and cls not in expected:
        names = ", ".join(e.KIND for e in expected)
        raise WireError(f"expected a {names} message, got {cls.KIND}")
    return typing.cast(M, _from_plain(cls, body, cls.KIND))


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [_to_plain(x) for x in obj]
    return obj


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = typing.get_type_hints(cls)
        _HINTS[cls] = hints
    return hints


def _from_plain(cls: type, body: Any, where: str) -> Any:
    if not isinstance(body, dict):
        raise WireError(f"{where}: expected a map")
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in body:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise WireError(f"{where}.{f.name}: missing")
            continue
        kwargs[f.name] = _convert(hints[f.name], body[f.name], f"{where}.{f.name}")
    return cls(**kwargs)


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Check `value` against annotation `tp`, building nested dataclasses."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where)
            except WireError:
                continue
        raise WireError(f"{where}: {type(value).__name__} does not fit {tp}")
    if origin is list:
        if not isinstance(value, list):
            raise WireError(f"{where}: expected a list, got {type(value).__name__}")
        (item,) = typing.get_args(tp)
        if item is int:  # hot path: token id lists
            if not all(type(x) is int for x in value):
                raise WireError(f"{where}: expected a list of ints")
            return value
        return [_convert(item, x, f"{where}[{i}]") for i, x in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return _from_plain(tp, value, where)  # type: ignore[arg-type]
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, tp):
        return value
    raise WireError(f"{where}: expected {tp.__name__}, got {type(value).__name__}")


# -- auth: gateways ask the auth actor (auth/service.py), queue group "auth" ------------------

AUTH_VERIFY = "kvmesh.auth.verify"  # VerifyKey -> Identity | ErrorReply(401)
AUTH_ADMIT = "kvmesh.auth.admit"  # Admit -> AuthOk | ErrorReply(429, retry_after)
AUTH_SETTLE = "kvmesh.auth.settle"  # Settle -> AuthOk
AUTH_RENEW = "kvmesh.auth.renew"  # Renew -> AuthOk (the slot's lease pushed ahead)
AUTH_ADMIN = "kvmesh.auth.admin"  # AdminRequest -> AdminReply | ErrorReply
AUTH_REVOKED = "kvmesh.auth.revoked"  # Revoked, a broadcast every gateway hears


@dataclass
class VerifyKey(Message):
    """Who holds this API key? (The plain key; the auth actor never stores or logs it.)"""

    KIND: ClassVar[str] = "auth_verify"
    key: str


@dataclass
class Identity(Message):
    """A verified caller: its tenant's scopes, priority (the engine's number) and limits;
    0 = unlimited. A gateway may cache it briefly and must drop it on `Revoked`."""

    KIND: ClassVar[str] = "identity"
    tenant: str
    key_id: str
    models: list[str]
    admin: bool = False
    priority: int = 0
    rpm: int = 0
    tpm: int = 0
    max_concurrency: int = 0
    max_tokens: int = 0
    cache_salt: str = ""  # the tenant's prefix-cache salt (kvmesh/block_hash.py)


@dataclass
class Admit(Message):
    """Take one request from the tenant's rate limits, reserve `tokens` (its worst case:
    prompt estimate + max_tokens) from the token budget, and take a concurrency slot."""

    KIND: ClassVar[str] = "auth_admit"
    tenant: str
    request_id: str
    rpm: int = 0
    tpm: int = 0
    max_concurrency: int = 0
    tokens: int = 0


@dataclass
class Renew(Message):
    """An admitted request still lives: push its concurrency slot's lease ahead."""

    KIND: ClassVar[str] = "auth_renew"
    tenant: str
    request_id: str


@dataclass
class Settle(Message):
    """An admitted request ended: give back its reservation, charge its real token usage,
    free its concurrency slot. Idempotent, so a gateway may retry it."""

    KIND: ClassVar[str] = "auth_settle"
    tenant: str
    request_id: str
    tokens: int
    tpm: int = 0
    max_concurrency: int = 0


@dataclass
class AuthOk(Message):
    """Yes. To an `Admit` that took a concurrency slot, `lease` is the seconds the slot is
    held without a `Renew`."""

    KIND: ClassVar[str] = "auth_ok"
    lease: float = 0.0


@dataclass
class AdminRequest(Message):
    """An admin operation (`op`: tenant.put, tenant.list, key.create, key.list, key.revoke)."""

    KIND: ClassVar[str] = "auth_admin"
    op: str
    args: Any = None


@dataclass
class AdminReply(Message):
    KIND: ClassVar[str] = "auth_admin_reply"
    result: Any = None


@dataclass
class Revoked(Message):
    """Keys revoked, or (`tenant` set) a tenant changed: gateways drop cached identities."""

    KIND: ClassVar[str] = "auth_revoked"
    key_ids: list[str] = field(default_factory=list)
    tenant: str = ""


KINDS.update({cls.KIND: cls for cls in (
    VerifyKey, Identity, Admit, Renew, Settle, AuthOk, AdminRequest, AdminReply, Revoked)})
