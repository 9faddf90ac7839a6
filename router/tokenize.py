"""Prompt to token ids, exactly as the worker's engine would tokenise it.

Chat messages (and tools, see router/tool_prompt.py) go through the model's chat template with
the generation prompt appended (or as the request's `ChatTemplateOptions` say: its last message
left open to be continued, more template variables), then the same `encode` as plain text. A
template that fails on a request's messages or variables is a ValueError (a 400), as is a
last message to continue that the template's text does not hold. `tokenize` and
`detokenize` answer `/tokenize` and `/detokenize` with the same tokenizer, so their counts are
the ones a generation's usage reports. The tokenizer is the
engine's own class, loaded from the same model files, so router and engine agree token for
token (which KV-block hashing relies on).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kvmesh.wire import (
    DEFAULT_TEMPLATE,
    ChatMessage,
    ChatTemplateOptions,
    DetokenizeRequest,
    GenerateRequest,
    TokenizeRequest,
    ToolDef,
)
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
            return self.encode_chat(req.messages, req.tools, req.template)
        if req.prompt is not None:
            return list(self.tokenizer.encode(req.prompt))
        raise ValueError("request has neither messages nor a prompt")

    def encode_chat(self, messages: list[ChatMessage], tools: list[ToolDef] | None,
                    options: ChatTemplateOptions = DEFAULT_TEMPLATE) -> list[int]:
        """Token ids of the chat template's text for `messages` (and `tools`)."""
        return list(self.tokenizer.encode(self.chat_text(messages, tools, options)))

    def chat_text(self, messages: list[ChatMessage], tools: list[ToolDef] | None,
                  options: ChatTemplateOptions = DEFAULT_TEMPLATE) -> str:
        """The chat template's text for `messages` (and `tools`), as `options` say."""
        msgs, extra = template_inputs(messages, tools, self.tokenizer.chat_template)
        variables = json.loads(options.kwargs) if options.kwargs else {}
        try:
            text = self.tokenizer.apply_chat_template(
                msgs, add_generation_prompt=options.add_generation_prompt,
                **variables, **extra)
        except ValueError:
            raise
        except Exception as exc:  # the model's template, on the client's messages and variables
            raise ValueError(f"the model's chat template failed on this request: {exc}") \
                from None
        if options.continue_final_message:
            return open_final(text, msgs[-1]["content"])
        return text

    def tokenize(self, req: TokenizeRequest) -> tuple[list[int], list[str] | None]:
        """(token ids, their token strings if asked) of a `/tokenize` request; ValueError for
        none."""
        if req.messages is not None:
            text = self.chat_text(req.messages, req.tools, req.template)
        elif req.prompt is not None:
            text = req.prompt
        else:
            raise ValueError("request has neither messages nor a prompt")
        ids = list(self.tokenizer.encode(text, add_special_tokens=req.add_special_tokens))
        return ids, self.token_strs(ids) if req.return_token_strs else None

    def token_strs(self, ids: list[int]) -> list[str]:
        """Each id's token string (vLLM's `token_strs`)."""
        return [self.tokenizer.id_to_token(t) or "" for t in ids]

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


def open_final(text: str, final: str) -> str:
    """`text` (a rendered chat) cut right after the last message's content `final`, so that
    message's end-of-turn is gone and the model continues it (transformers'
    `continue_final_message`). A template may trim the content's outer whitespace: then the
    cut follows the trimmed content. ValueError when the text does not hold it."""
    core = final.strip()
    at = text.rfind(core)
    if not core or at == -1:
        raise ValueError("continue_final_message: the chat template's text does not hold the "
                         "last message's content")
    lead = final[:len(final) - len(final.lstrip())]
    if text[at:at + len(final) - len(lead)] == final.lstrip():
        return text[:at + len(final) - len(lead)]  # the template kept the trailing whitespace
    return text[:at + len(core)]
