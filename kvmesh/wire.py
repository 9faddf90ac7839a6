"""The wire contract: every message a kvmesh service sends over NATS, and the subjects.

Every message is a dataclass below, framed by `kvmesh.codec` (`encode`, `decode`, `WireError`
are re-exported here): msgpack, versioned, validated on decode.

Request path (see DESIGN.md): the gateway sends a `GenerateRequest` to `ROUTER_GENERATE` and
gets `Accepted` (or `ErrorReply`); the router tokenises it into a `TokenizedRequest` for
`worker_generate(id)`. The worker publishes to the request's `reply_to` (one subject per
gateway process) one `Deltas` frame per engine step, carrying the chunks and errors of every
request of that gateway it served in the step. `Cancel` goes to `CANCEL`, which every worker
hears. Embeddings travel the same subjects: `EmbedRequest` to the router, `TokenizedEmbed` to
the worker, one `Chunk` per input (its `embedding`) back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from kvmesh import codec
from kvmesh.codec import SCHEMA_VERSION, WireError, decode, encode  # noqa: F401 (re-exported)

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


@dataclass
class Message:
    """Base of every wire message; `KIND` is the frame's `t` tag."""

    KIND: ClassVar[str] = ""


@dataclass
class ToolCall:
    """A function call the assistant made; `arguments` is JSON text, as OpenAI sends it."""

    id: str
    name: str
    arguments: str


@dataclass
class ToolDef:
    """A function the model may call; `parameters` is its JSON Schema as JSON text ("" for
    none), kept as text so the wire stays typed whatever the schema holds."""

    name: str
    description: str = ""
    parameters: str = ""


@dataclass
class ChatMessage:
    """One chat turn. An assistant turn may carry `tool_calls`; a `tool` turn answers the
    call `tool_call_id`."""

    role: str
    content: str
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None


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
    grammar_kind: str = ""  # constrained decoding: "" or one of kvmesh.grammar.KINDS
    grammar: str = ""  # the grammar's source; see kvmesh/grammar.py
    cache_salt: str = ""  # roots the prefix-cache chain: only equal salts share cached blocks
    echo: bool = False  # the first chunk carries the prompt (`PromptEcho`); max_tokens may be 0
    prompt_logprobs: int | None = None  # with echo: the prompt's logprobs, this many top ones
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id -> added to its logit


def sampling_of(obj: SamplingFields) -> dict[str, Any]:
    """Every sampling field of `obj`, by name."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(SamplingFields)}


@dataclass
class GenerateRequest(Message, SamplingFields):
    """One generation, gateway -> router. Exactly one of `prompt`, `messages`,
    `prompt_token_ids` is set. `max_tokens` None means "the rest of the context"."""

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
    tools: list[ToolDef] | None = None  # reach the chat template (router/tool_prompt.py)


@dataclass
class TokenizedRequest(Message, SamplingFields):
    """One generation, router -> worker: the prompt as the model's token ids."""

    KIND: ClassVar[str] = "tokenized"
    request_id: str
    model: str
    reply_to: str
    prompt_token_ids: list[int]
    tenant: str = ""

    @classmethod
    def of(cls, req: GenerateRequest, prompt_token_ids: list[int]) -> TokenizedRequest:
        return cls(request_id=req.request_id, model=req.model, reply_to=req.reply_to,
                   prompt_token_ids=prompt_token_ids, tenant=req.tenant, **sampling_of(req))


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
class PromptEcho:
    """An `echo` request's prompt: its text, and with `prompt_logprobs` each token's text and
    one `Logprob` per token after the first, which has nothing to condition on (`tokens` is
    empty without them)."""

    text: str
    tokens: list[str]
    logprobs: list[Logprob] | None = None


@dataclass
class UsageInfo:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0


@dataclass
class Chunk(Message):
    """One choice's delta. `seq` counts 0, 1, 2... per request across all choices, so a
    reader can restore the order; the chunk that finishes the last choice carries `usage`.
    An `echo` request's first chunk (index 0, no tokens) carries its `prompt`."""

    KIND: ClassVar[str] = "chunk"
    request_id: str
    seq: int
    index: int
    text: str
    token_ids: list[int]
    logprobs: list[Logprob] | None = None
    finish_reason: str | None = None
    usage: UsageInfo | None = None
    prompt: PromptEcho | None = None
    embedding: bytes | None = None  # an embedding request's input `index`: float32 LE values


@dataclass
class StreamError:
    """An accepted request that failed; nothing more follows for it."""

    request_id: str
    error: ErrorReply


@dataclass
class Deltas(Message):
    """What one worker made in one engine step for the requests of one gateway process: one
    frame per step per gateway, not one message per token. Chunks of one request keep their
    `seq` order within and across frames."""

    KIND: ClassVar[str] = "deltas"
    worker_id: str
    chunks: list[Chunk] = field(default_factory=list)
    errors: list[StreamError] = field(default_factory=list)


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
    pooling: str = ""  # how it pools embeddings (last, mean); "" = it serves none


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


codec.register(
    GenerateRequest, TokenizedRequest, Accepted, Chunk, Deltas, Cancel, Ping, Heartbeat,
    KVEvent, ErrorReply, KVResync, CacheGet, CacheHit, CacheMiss, CachePut, CacheStats,
)


# -- tokenize and detokenize: gateways ask a router (router/service.py), queue group "router" --

ROUTER_TOKENIZE = "kvmesh.router.tokenize"  # TokenizeRequest -> TokenizeReply | ErrorReply
ROUTER_DETOKENIZE = "kvmesh.router.detokenize"  # DetokenizeRequest -> DetokenizeReply | ...


@dataclass
class TokenizeRequest(Message):
    """Token ids of a prompt, as a generation's prompt would be tokenised. Exactly one of
    `prompt` and `messages` is set; `messages` go through the chat template (with `tools`)."""

    KIND: ClassVar[str] = "tokenize"
    model: str
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    tools: list[ToolDef] | None = None
    add_special_tokens: bool = False
    add_generation_prompt: bool = True
    return_token_strs: bool = False  # the reply's token_strs; None unless asked


@dataclass
class TokenizeReply(Message):
    KIND: ClassVar[str] = "tokenize_reply"
    tokens: list[int]
    max_model_len: int
    token_strs: list[str] | None = None


@dataclass
class DetokenizeRequest(Message):
    KIND: ClassVar[str] = "detokenize"
    model: str
    tokens: list[int]


@dataclass
class DetokenizeReply(Message):
    KIND: ClassVar[str] = "detokenize_reply"
    prompt: str


codec.register(TokenizeRequest, TokenizeReply, DetokenizeRequest, DetokenizeReply)
# -- embeddings: the generation subjects carry them too (ROUTER_GENERATE, worker_generate) ----


@dataclass
class EmbedRequest(Message):
    """Embed each input, gateway -> router. Exactly one of `inputs` (texts) and
    `input_token_ids` is set. `dimensions`: keep the first this many values (renormalised).
    The answer is `Accepted`, then one `Chunk` per input (`index`, `embedding`) to `reply_to`;
    the last one carries usage."""

    KIND: ClassVar[str] = "embed"
    request_id: str
    model: str
    reply_to: str
    inputs: list[str] | None = None
    input_token_ids: list[list[int]] | None = None
    dimensions: int | None = None
    tenant: str = ""
    session: str = ""
    priority: int = 0
    cache_salt: str = ""
    exclude_workers: list[str] = field(default_factory=list)  # a retry skips these


@dataclass
class TokenizedEmbed(Message):
    """Embed each input, router -> worker: every input as the model's token ids."""

    KIND: ClassVar[str] = "tokenized_embed"
    request_id: str
    model: str
    reply_to: str
    inputs: list[list[int]]
    dimensions: int | None = None
    tenant: str = ""
    priority: int = 0
    cache_salt: str = ""

    @classmethod
    def of(cls, req: EmbedRequest, inputs: list[list[int]]) -> TokenizedEmbed:
        return cls(request_id=req.request_id, model=req.model, reply_to=req.reply_to,
                   inputs=inputs, dimensions=req.dimensions, tenant=req.tenant,
                   priority=req.priority, cache_salt=req.cache_salt)


codec.register(EmbedRequest, TokenizedEmbed)


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
    responses_ttl: int = 0  # seconds its stored /v1/responses live; 0 = the store's default
    clamp_max_tokens: bool = False  # over max_tokens: lowered to it, not a 400


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


codec.register(
    VerifyKey, Identity, Admit, Renew, Settle, AuthOk, AdminRequest, AdminReply, Revoked)


# -- responses store: gateways ask the cache actor (cache/responses_store.py), queue "cache" --

RESPONSES_PUT = "kvmesh.responses.put"  # ResponsePut -> ResponseAck | ErrorReply(503, 413)
RESPONSES_GET = "kvmesh.responses.get"  # ResponseGet -> ResponseFound | ErrorReply(404, 503)
RESPONSES_DELETE = "kvmesh.responses.delete"  # ResponseDelete -> ResponseAck | ErrorReply


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
    status: str  # in_progress, completed, incomplete, failed (OpenAI's response status)
    body: str
    input_items: str
    messages: list[ChatMessage]
    previous_response_id: str | None = None


@dataclass
class ResponsePut(Message):
    """Store (or replace) `record` under `tenant` for `ttl` seconds (0: the store's default)."""

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


codec.register(
    StoredResponse, ResponsePut, ResponseGet, ResponseDelete, ResponseFound, ResponseAck)
