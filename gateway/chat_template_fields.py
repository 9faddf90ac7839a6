"""vLLM's chat-template fields (chat completions and `/tokenize`), validated into the wire's
`ChatTemplateOptions` (router/tokenize.py renders them).

- `add_generation_prompt` (default true): end the prompt with the assistant turn's opening.
- `continue_final_message` (default false): leave the last message open so the answer
  continues it (an assistant's prefill); it needs `add_generation_prompt: false`, and the last
  message must be an assistant's with text and no tool calls.
- `chat_template_kwargs`: an object of more template variables (Qwen3's `enable_thinking`, ...);
  a name the renderer sets itself (`RESERVED`) is a 400, so a client cannot swap the messages,
  tools or special tokens behind the fields that were checked.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.errors import bad_field
from gateway.field_values import typed
from kvmesh.wire import ChatMessage, ChatTemplateOptions

TEMPLATE_FIELDS = ("add_generation_prompt", "continue_final_message", "chat_template_kwargs")
RESERVED = frozenset({"messages", "tools", "add_generation_prompt", "continue_final_message",
                      "bos_token", "eos_token"})


def parse_template_options(body: dict[str, Any],
                           messages: list[ChatMessage]) -> ChatTemplateOptions:
    """The body's template fields; a 400 naming the field at fault."""
    add = typed(body, "add_generation_prompt", bool, True)
    cont = typed(body, "continue_final_message", bool, False)
    if cont:
        if add:
            raise bad_field("continue_final_message", "needs add_generation_prompt: false (the "
                            "answer continues the last message instead of opening a new one)")
        last = messages[-1]
        if last.role != "assistant" or not last.content or last.tool_calls:
            raise bad_field("continue_final_message", "the last message must be an "
                            "assistant's, with text and no tool calls, to be continued")
    return ChatTemplateOptions(add, cont, _kwargs(body))


def _kwargs(body: dict[str, Any]) -> str:
    kwargs = typed(body, "chat_template_kwargs", dict, None)
    if not kwargs:
        return ""
    taken = sorted(RESERVED & kwargs.keys())
    if taken:
        raise bad_field("chat_template_kwargs", f"{taken[0]!r} is set by the server, not here")
    return json.dumps(kwargs, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
