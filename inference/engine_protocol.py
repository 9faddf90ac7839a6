"""The typed messages between a worker and its engine process (`engine_client.py` sends the
commands, `engine_loop.py` answers with `EngineReady` once and then one `EngineStep` per step).

They travel pickled over a local pipe: both ends are the same code on the same host. A step's
outputs go inside its pickle as one msgpack body (`EngineStep.__getstate__`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from inference.engine.embedding import EmbeddingOutput, PoolingParams
from inference.engine.engine_stats import EngineStats
from inference.engine.errors import RequestRejected
from inference.engine.outputs import StepOutput
from inference.engine.prompt_check import PromptLimits
from inference.engine.sampling_params import SamplingParams
from inference.engine.tokenizer import Tokenizer

# -- worker -> engine ------------------------------------------------------------------------


@dataclass
class AddRequest:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams


@dataclass
class AddEmbedding:
    """An embedding request: one vector per prompt (inference/engine/embedding.py)."""

    request_id: str
    prompts: list[list[int]]
    params: PoolingParams


@dataclass
class Abort:
    request_id: str


@dataclass
class Snapshot:
    """Send every cached block key after the next step's own KV events (a router's resync)."""


@dataclass
class Probe:
    """Send a step at once, an empty one if nothing else: the worker asks whether an engine
    it found stalled (inference/engine_watch.py) runs again."""


@dataclass
class Stop:
    """Finish nothing more: exit the engine process."""


Command = AddRequest | AddEmbedding | Abort | Snapshot | Stop

# -- engine -> worker ------------------------------------------------------------------------


@dataclass
class EngineReady:
    """The model is loaded and the KV pool allocated."""

    limits: PromptLimits
    block_size: int
    stats: EngineStats
    device: str  # "cpu", "cuda:0"
    dtype: str  # the model's: "bfloat16", "float32", "float16"
    dtype_reason: str  # why that dtype: "the CPU has avx512_bf16", "set by dtype"
    pooling: str | None = None  # how it pools embeddings; None: it serves none
    # The engine's own tokenizer and end-of-sequence ids: the worker makes the text of
    # outputs without stop strings with them (inference/output_text.py). None: no tokenizer
    # (a `dummy:` preset), and no text.
    tokenizer: Tokenizer | None = None
    eos_ids: frozenset[int] = frozenset()


@dataclass
class EngineFailed:
    """The engine could not start (bad model path, out of memory, ...)."""

    message: str


PrefillRow = tuple[str, int]
"""A sequence that computed prompt tokens in an engine step: (request_id, how many)."""


@dataclass
class EngineStep:
    """Everything one engine iteration produced. `rejected`: requests refused on add, or
    failed while running (typed);
    `crashed`: the step raised, every running request was aborted (the message says why);
    `token_text`: the text of every token id in this step's logprobs and prompts, special
    tokens skipped (""), `special_text` the text of those special ones (shown in echoed
    prompts, and in answers with `skip_special_tokens: false`), and `token_bytes` the bytes
    of those whose text is not theirs (part of a character, shown as U+FFFD:
    `Tokenizer.token_bytes`); `embeddings`:
    the vectors of embedding inputs this step finished. The step ran `batch_size` sequences,
    `batch_tokens` tokens; `prefills` holds a row for each that computed part of its prompt (a
    request's first step is one), which the worker's telemetry reads for queue time and
    `engine.step` spans. Not a row per decode: at 256 sequences those rows were a third of
    what the engine pickled per step."""

    outputs: list[StepOutput]
    stats: EngineStats
    prefills: list[PrefillRow] = field(default_factory=list)
    start_ns: int = 0  # wall clock, for the engine-step span
    seconds: float = 0.0
    batch_size: int = 0
    batch_tokens: int = 0
    rejected: list[tuple[str, RequestRejected]] = field(default_factory=list)
    crashed: str | None = None
    stored: list[int] = field(default_factory=list)
    evicted: list[int] = field(default_factory=list)
    snapshot: list[int] | None = None  # every cached key, when a resync asked for it
    token_text: dict[int, str] = field(default_factory=dict)
    special_text: dict[int, str] = field(default_factory=dict)
    token_bytes: dict[int, bytes] = field(default_factory=dict)
    embeddings: list[EmbeddingOutput] = field(default_factory=list)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled as its fields, but the outputs as one msgpack body (msgspec, in C): 256
        outputs pickled one by one cost about five times as much (bench/step_record.py)."""
        state = self.__dict__.copy()
        state["outputs"] = _OUTPUTS.encode(self.outputs)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state["outputs"] = _OUTPUTS_BACK.decode(state["outputs"])
        self.__dict__.update(state)


_OUTPUTS = msgspec.msgpack.Encoder()
_OUTPUTS_BACK = msgspec.msgpack.Decoder(list[StepOutput])
