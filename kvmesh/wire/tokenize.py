"""Tokenize and detokenize: gateways ask a router (router/service.py), queue group "router".

The gateway's `/tokenize` and `/detokenize` routes; the router answers with the tokenizer
it tokenises generations with, so the ids are the ones a generation's prompt would get.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from kvmesh.wire import codec
from kvmesh.wire.generation import ChatMessage, ChatTemplateOptions, ToolDef
from kvmesh.wire.message import Message

ROUTER_TOKENIZE = "kvmesh.router.tokenize"  # TokenizeRequest -> TokenizeReply | ErrorReply
ROUTER_DETOKENIZE = "kvmesh.router.detokenize"  # DetokenizeRequest -> DetokenizeReply | ...


@dataclass
class TokenizeRequest(Message):
    """Token ids of a prompt, as a generation's prompt would be tokenised. Exactly one of
    `prompt` and `messages` is set; `messages` go through the chat template (with `tools`).
    `truncate` (Responses' `truncation: auto`, messages only): the oldest turns are dropped
    until the prompt fits the model's context with room for one token, as a generation's
    would be (`token_strs` are then of what was kept)."""

    KIND: ClassVar[str] = "tokenize"
    model: str
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    tools: list[ToolDef] | None = None
    add_special_tokens: bool = False
    return_token_strs: bool = False  # the reply's token_strs; None unless asked
    template: ChatTemplateOptions = field(default_factory=ChatTemplateOptions)
    truncate: bool = False


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
