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
"""

from __future__ import annotations

import json
from typing import Any

from kvmesh.grammar import TOOL_CALL_CLOSE, TOOL_CALL_OPEN
from kvmesh.wire import ChatMessage, ToolCall, ToolDef

FALLBACK_PROMPT = (
    "You can call functions. To call one, answer with "
    f'{TOOL_CALL_OPEN}{{"name": <function name>, "arguments": <arguments object>}}'
    f"{TOOL_CALL_CLOSE} and nothing else. The functions, as JSON:\n"
)


def knows_tools(template: str | None) -> bool:
    """Whether a chat template renders `tools` and `tool_calls` itself."""
    return bool(template) and "tools" in template and "tool_calls" in template  # type: ignore[operator]


def template_inputs(messages: list[ChatMessage], tools: list[ToolDef] | None,
                    template: str | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(messages as dicts, extra template variables) for `apply_chat_template`."""
    native = knows_tools(template)
    out = [_message(m, native) for m in messages]
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


def _message(m: ChatMessage, native: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if native:
        if m.tool_calls:
            out["tool_calls"] = [{"id": c.id, "type": "function", "function": {
                "name": c.name, "arguments": _arguments(c)}} for c in m.tool_calls]
        if m.tool_call_id is not None:
            out["tool_call_id"] = m.tool_call_id
        if m.name is not None:
            out["name"] = m.name
        return out
    if m.tool_calls:
        calls = "\n".join(TOOL_CALL_OPEN + json.dumps({"name": c.name, "arguments": _arguments(c)})
                          + TOOL_CALL_CLOSE for c in m.tool_calls)
        out["content"] = (m.content + "\n" if m.content else "") + calls
    if m.role == "tool":
        out = {"role": "user", "content": f"<tool_response>\n{m.content}\n</tool_response>"}
    return out


def _arguments(c: ToolCall) -> Any:
    """The arguments as an object (templates `tojson` them), or the text if it is not JSON."""
    try:
        return json.loads(c.arguments)
    except ValueError:
        return c.arguments
