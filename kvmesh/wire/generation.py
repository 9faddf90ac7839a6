"""Generation and embeddings: gateway -> router -> worker, and the worker's answers and load.

Request path (docs/ARCHITECTURE.md): the gateway sends a `GenerateRequest` to `ROUTER_GENERATE`
and gets `Accepted` (or `ErrorReply`); the router tokenises it into a `TokenizedRequest` for
`worker_generate(id)`. The worker publishes to the request's `reply_to` (one subject per
gateway process) one `Deltas` frame per engine step, carrying the chunks and errors of every
request of that gateway it served in the step. `Cancel` goes to `CANCEL`, which every worker
hears. Embeddings travel the same subjects: `EmbedRequest` to the router, `TokenizedEmbed` to
the worker, one `Chunk` per input (its `embedding`) back.

Workers publish a `Heartbeat` (load) on `HEARTBEAT` and answer one on `worker_stats(id)` (a
`Ping`); `KVEvent`s on `KV_EVENTS` tell routers which prompt blocks each worker holds, and a
router sends `KVResync` when it lost track.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from kvmesh.wire import codec
from kvmesh.wire.message import ErrorReply, Message

# Subjects. Workers: one subject each for generate and stats; the rest are broadcasts.
ROUTER_GENERATE = "kvmesh.router.generate"
ROUTER_PING = "kvmesh.router.ping"
HEARTBEAT = "kvmesh.worker.heartbeat"
KV_EVENTS = "kvmesh.worker.kv_events"
CANCEL = "kvmesh.cancel"
KV_RESYNC = "kvmesh.worker.kv_resync"  # a router asks workers to resend their whole KV set
GATEWAY_HEARTBEAT = "kvmesh.gateway.heartbeat"  # a gateway process says its inbox is read


def worker_generate(worker_id: str) -> str:
    return f"kvmesh.worker.{worker_id}.generate"


def worker_stats(worker_id: str) -> str:
    return f"kvmesh.worker.{worker_id}.stats"


@dataclass
class ToolCall:
    """A function call the assistant made; `arguments` is JSON text, as OpenAI sends it."""

    id: str
    name: str
    arguments: str


@dataclass
class ToolDef:
    """A function the model may call; `parameters` is its JSON Schema as JSON text ("" for
    none), kept as text so the wire stays typed whatever the schema holds. `strict`: its
    calls must match `parameters` even where the answer is free (`tool_choice` auto)."""

    name: str
    description: str = ""
    parameters: str = ""
    strict: bool = False


@dataclass
class ChatMessage:
    """One chat turn. An assistant turn may carry `tool_calls`; a `tool` turn answers the
    call `tool_call_id`."""

    role: str
    content: str
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None


@dataclass
class ChatTemplateOptions:
    """How `messages` become a prompt (vLLM's chat fields; router/tokenize.py renders them).
    `continue_final_message`: the last message (an assistant's) is left open and the answer
    continues it (then `add_generation_prompt` is False). `kwargs`: `chat_template_kwargs`, a
    JSON object's text ("" for none), more variables for the template (e.g. Qwen3's
    `enable_thinking`); never one the renderer sets itself."""

    add_generation_prompt: bool = True
    continue_final_message: bool = False
    kwargs: str = ""


DEFAULT_TEMPLATE = ChatTemplateOptions()  # a plain chat: compare with it, never change it


@dataclass(kw_only=True)
class SamplingFields:
    """The sampling parameters, declared once for every hop that carries them: the gateway's
    parsed request, `GenerateRequest` on the wire, and the result-cache key (`sampling_of`).
    The engine's `SamplingParams` validates the same names; it does not import this module,
    since the engine stands below the wire (kvmesh/layers.py)."""

    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    min_p: float = 0.0  # vLLM's: drop tokens below min_p x the likeliest one's probability
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
    presence_penalty: float = 0.0  # OpenAI's, on generated tokens
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0  # vLLM's, on every token seen; 1 is off
    min_tokens: int = 0  # vLLM's: no end-of-sequence, stop token or stop string before this many
    include_stop_str_in_output: bool = False  # vLLM's: the stop string found ends the text
    skip_special_tokens: bool = True  # vLLM's: special tokens show no text
    allowed_token_ids: list[int] | None = None  # vLLM's: only these can be drawn


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
    truncate: bool = False  # drop the oldest turns until the prompt fits (router/truncation.py)
    template: ChatTemplateOptions = field(default_factory=ChatTemplateOptions)
    # vLLM's: keep the prompt's last this many tokens; -1: the longest tail that fits
    truncate_prompt_tokens: int | None = None


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
    """`token_bytes`: the token's bytes where its text does not hold them (part of a
    character, shown as U+FFFD), else None: they are the text's UTF-8."""

    token_id: int
    token: str
    logprob: float
    token_bytes: bytes | None = None


@dataclass
class Logprob:
    """As `TopLogprob`, with the top alternatives."""

    token_id: int
    token: str
    logprob: float
    top: list[TopLogprob] = field(default_factory=list)
    token_bytes: bytes | None = None


@dataclass
class PromptEcho:
    """An `echo` request's prompt: its text, and with `prompt_logprobs` each token's text and
    one `Logprob` per token after the first, which has nothing to condition on (`tokens` and
    `token_ids` are empty without them)."""

    text: str
    tokens: list[str]
    logprobs: list[Logprob] | None = None
    token_ids: list[int] = field(default_factory=list)  # with `tokens`: each one's id


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
    """Stop a request. `superseded`: nobody left; the result cache answered the request its
    gateway routed alongside the lookup, so the worker does not count it a cancel (499).
    `worker_id`: only that worker stops it ("" every worker): a request sent on to another
    worker is cancelled where it was first sent, and only there."""

    KIND: ClassVar[str] = "cancel"
    request_id: str
    superseded: bool = False
    worker_id: str = ""


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
    created: int = 0  # the model files' mtime, Unix seconds (GET /v1/models' `created`)


@dataclass
class GatewayBeat(Message):
    """A gateway process is alive and reads `inbox`, published every `GATEWAY_BEAT_S`: a
    worker stops the requests whose deltas go to an inbox whose beats stopped (the gateway
    crashed: nobody reads them), inference/worker.py."""

    KIND: ClassVar[str] = "gateway_heartbeat"
    inbox: str


GATEWAY_BEAT_S = 1.0


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
    truncate_prompt_tokens: int | None = None  # as GenerateRequest's, for each input


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


codec.register(
    GenerateRequest, TokenizedRequest, Accepted, Chunk, Deltas, Cancel, Ping, Heartbeat,
    KVEvent, KVResync, EmbedRequest, TokenizedEmbed, GatewayBeat,
)
