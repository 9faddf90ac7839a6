"""The typed messages between a worker and its engine process (`engine_client.py` sends the
commands, `engine_loop.py` answers with `EngineReady` once and then one `EngineStep` per step).

They travel pickled over a local pipe: both ends are the same code on the same host.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from inference.engine.engine import EngineStats
from inference.engine.errors import RequestRejected
from inference.engine.outputs import StepOutput
from inference.engine.prompt_check import PromptLimits
from inference.engine.sampling_params import SamplingParams

# -- worker -> engine ------------------------------------------------------------------------


@dataclass
class AddRequest:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams


@dataclass
class Abort:
    request_id: str


@dataclass
class Snapshot:
    """Send every cached block key after the next step's own KV events (a router's resync)."""


@dataclass
class Stop:
    """Finish nothing more: exit the engine process."""


Command = AddRequest | Abort | Snapshot | Stop

# -- engine -> worker ------------------------------------------------------------------------


@dataclass
class EngineReady:
    """The model is loaded and the KV pool allocated."""

    limits: PromptLimits
    block_size: int
    stats: EngineStats


@dataclass
class EngineFailed:
    """The engine could not start (bad model path, out of memory, ...)."""

    message: str


@dataclass
class ScheduledSeq:
    """One sequence an engine step ran: `tokens` new tokens, part of its prompt or not."""

    request_id: str
    tokens: int
    prefill: bool


@dataclass
class EngineStep:
    """Everything one engine iteration produced. `rejected`: requests refused on add (typed);
    `crashed`: the step raised, every running request was aborted (the message says why);
    `token_text`: the text of every token id in this step's logprobs."""

    outputs: list[StepOutput]
    stats: EngineStats
    scheduled: list[ScheduledSeq] = field(default_factory=list)
    start_ns: int = 0  # wall clock, for the engine-step span
    seconds: float = 0.0
    rejected: list[tuple[str, RequestRejected]] = field(default_factory=list)
    crashed: str | None = None
    stored: list[int] = field(default_factory=list)
    evicted: list[int] = field(default_factory=list)
    snapshot: list[int] | None = None  # every cached key, when a resync asked for it
    token_text: dict[int, str] = field(default_factory=dict)
