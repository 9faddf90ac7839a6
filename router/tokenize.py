"""Prompt to token ids, exactly as the worker's engine would tokenise it.

Chat messages (and tools, see router/tool_prompt.py) go through the model's chat template with
the generation prompt appended, then the same `encode` as plain text. The tokenizer is the
engine's own class, loaded from the same model files, so router and engine agree token for
token (which KV-block hashing relies on).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kvmesh.wire import GenerateRequest
from router.tool_prompt import template_inputs


@dataclass
class PromptTokenizer:
    tokenizer: Any  # inference.engine.tokenizer.Tokenizer

    @classmethod
    def load(cls, spec: str | None) -> PromptTokenizer:
        """Load the tokenizer of model `spec` (None = the default model) without its weights."""
        from inference.engine.loader import load_checkpoint
        from inference.engine.model_store import resolve_model

        return cls(load_checkpoint(resolve_model(spec), need_weights=False).tokenizer)

    def encode(self, req: GenerateRequest) -> list[int]:
        """Token ids of `req`'s prompt; ValueError when it has none."""
        if req.messages is not None:
            messages, extra = template_inputs(req.messages, req.tools,
                                              self.tokenizer.chat_template)
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                      **extra)
            return list(self.tokenizer.encode(text))
        if req.prompt is not None:
            return list(self.tokenizer.encode(req.prompt))
        raise ValueError("request has neither messages nor a prompt")

    def encode_texts(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, as `encode` makes a prompt's (an embedding's inputs)."""
        return [list(self.tokenizer.encode(t)) for t in texts]
