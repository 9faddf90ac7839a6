"""Prompt to token ids, exactly as the worker's engine would tokenise it.

Chat messages (and tools, see router/tool_prompt.py) go through the model's chat template with
the generation prompt appended, then the same `encode` as plain text. `tokenize` and
`detokenize` answer `/tokenize` and `/detokenize` with the same tokenizer, so their counts are
the ones a generation's usage reports. The tokenizer is the
engine's own class, loaded from the same model files, so router and engine agree token for
token (which KV-block hashing relies on).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kvmesh.wire import ChatMessage, DetokenizeRequest, GenerateRequest, TokenizeRequest, ToolDef
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
            return self.encode_chat(req.messages, req.tools)
        if req.prompt is not None:
            return list(self.tokenizer.encode(req.prompt))
        raise ValueError("request has neither messages nor a prompt")

    def encode_chat(self, messages: list[ChatMessage], tools: list[ToolDef] | None
                    ) -> list[int]:
        """Token ids of the chat template's text for `messages` (and `tools`)."""
        return list(self.tokenizer.encode(self.chat_text(messages, tools)))

    def chat_text(self, messages: list[ChatMessage], tools: list[ToolDef] | None,
                  add_generation_prompt: bool = True) -> str:
        """The chat template's text for `messages` (and `tools`)."""
        msgs, extra = template_inputs(messages, tools, self.tokenizer.chat_template)
        return self.tokenizer.apply_chat_template(
            msgs, add_generation_prompt=add_generation_prompt, **extra)

    def tokenize(self, req: TokenizeRequest) -> tuple[list[int], list[str] | None]:
        """(token ids, their token strings if asked) of a `/tokenize` request; ValueError for
        none."""
        if req.messages is not None:
            text = self.chat_text(req.messages, req.tools, req.add_generation_prompt)
        elif req.prompt is not None:
            text = req.prompt
        else:
            raise ValueError("request has neither messages nor a prompt")
        ids = list(self.tokenizer.encode(text, add_special_tokens=req.add_special_tokens))
        if not req.return_token_strs:
            return ids, None
        return ids, [self.tokenizer.id_to_token(t) or "" for t in ids]

    def detokenize(self, req: DetokenizeRequest) -> str:
        """The text of `req.tokens`, special tokens kept; ValueError for an id outside the
        vocabulary."""
        size = self.tokenizer.vocab_size
        if any(not 0 <= t < size for t in req.tokens):
            raise ValueError(f"token ids must be in [0, {size})")
        return self.tokenizer.decode(req.tokens, skip_special_tokens=False)
    def encode_texts(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, as `encode` makes a prompt's (an embedding's inputs)."""
        return [list(self.tokenizer.encode(t)) for t in texts]
