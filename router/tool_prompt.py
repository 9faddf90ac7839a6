"""Chat messages and tools as the model's chat template sees them.

A template that knows tools (it reads `tools` and `tool_calls`, as Qwen2.5, Hermes and
Llama 3.1 templates do) gets them as transformers passes them: `tools=[{"type": "function",
"function": {...}}]`, assistant `tool_calls` with `arguments` as an object, and `tool` turns.
A template without tool support (SmolLM2's) gets the documented fallback instead:
- a system prompt listing the functions as JSON and asking for calls written as
  `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (prepended to the first system
  message, or a new one);
- each assistant call written into its content in that form;
- each `tool` turn as a `user` turn whose content is `<tool_response>...</tool_response>`.

Every template gets a `developer` turn as a `system` turn (OpenAI's meaning: it replaces the
template's default system prompt as `system` does), and each message's `name`. A template
that does not show names (found once per template by rendering a probe turn,
`renders_names`) gets the name written before the message's text instead (`"bob: hi"`), so
the model sees who spoke.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from inference.engine.tokenizer import compile_template  # the sandbox prompts render in
from kvmesh.grammar import TOOL_CALL_CLOSE, TOOL_CALL_OPEN
from kvmesh.wire import ChatMessage, ToolCall, ToolDef

FALLBACK_PROMPT = (
    "You can call functions. To call one, answer with "
    f'{TOOL_CALL_OPEN}{{"name": <function name>, "arguments": <arguments object>}}'
    f"{TOOL_CALL_CLOSE} and nothing else. The functions, as JSON:\n"
)
_NAME_PROBE = "kvmesh-name-probe-5c1e"  # a name no template prints unless it prints names


def knows_tools(template: str | None) -> bool:
    """Whether a chat template renders `tools` and `tool_calls` itself."""
    return bool(template) and "tools" in template and "tool_calls" in template  # type: ignore[operator]


@lru_cache(maxsize=64)
def renders_names(template: str | None) -> bool:
    """Whether a chat template shows a message's `name`: a probe turn rendered (once per
    template) holds the probe name."""
    if not template:
        return False
    probe = [{"role": "user", "content": "hi", "name": _NAME_PROBE}]
    try:
        text = compile_template(template).render(messages=probe, add_generation_prompt=False,
                                                  bos_token="", eos_token="")
    except Exception:  # a template that refuses the probe: the written-in name still shows
        return False
    return _NAME_PROBE in text


def template_inputs(messages: list[ChatMessage], tools: list[ToolDef] | None,
                    template: str | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(messages as dicts, extra template variables) for `apply_chat_template`."""
    native, named = knows_tools(template), renders_names(template)
    out = [_message(m, native, named) for m in messages]
    if not tools:
        return out, {}
    specs = [_tool_spec(t) for t in tools]
    if native:
        return out, {"tools": specs}
    prompt = FALLBACK_PROMPT + "\n".join(json.dumps(s["function"]) for s in specs)
    if out and out[0]["role"] == "system":
        out[0] = {**out[0], "content": prompt + "\n\n" + out[0]["content"]}
    else:
        out.insert(0, {"role": "system", "content": prompt})
    return out, {}


def _tool_spec(t: ToolDef) -> dict[str, Any]:
    params = json.loads(t.parameters) if t.parameters else {"type": "object", "properties": {}}
    return {"type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": params}}


def _message(m: ChatMessage, native: bool, named: bool) -> dict[str, Any]:
    content = m.content
    if m.name is not None and content and not named:
        content = f"{m.name}: {content}"
    out: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role,
                           "content": content}
    if m.name is not None:
        out["name"] = m.name
    if native:
        if m.tool_calls:
            out["tool_calls"] = [{"id": c.id, "type": "function", "function": {
                "name": c.name, "arguments": _arguments(c)}} for c in m.tool_calls]
        if m.tool_call_id is not None:
            out["tool_call_id"] = m.tool_call_id
        return out
    if m.tool_calls:
        # compact and back to back, as the tool-call grammar writes them (kvmesh/grammar.py):
        # the model sees its past calls in the form it is held to
        calls = "".join(TOOL_CALL_OPEN + json.dumps({"name": c.name, "arguments": _arguments(c)},
                                                    separators=(",", ":"))
                        + TOOL_CALL_CLOSE for c in m.tool_calls)
        out["content"] = (content + "\n" if content else "") + calls
    if m.role == "tool":
        out = {"role": "user", "content": f"<tool_response>\n{content}\n</tool_response>"}
    return out


def _arguments(c: ToolCall) -> Any:
    """The arguments as an object (templates `tojson` them), or the text if it is not JSON."""
    try:
        return json.loads(c.arguments)
    except ValueError:
        return c.arguments
