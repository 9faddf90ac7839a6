"""Which requests the result cache may answer, and their keys.

Contract:
- Only deterministic requests are cacheable: temperature 0 (greedy), or an explicit `seed`.
  Anything else (sampling without a seed) is never looked up or stored.
- The key is a SHA-256 over a canonical JSON of everything that can change the answer: the
  model name and revision, the tenant (tenants never share entries), the request kind, the
  prompt (messages with their tool calls, text, or token ids), the tools and `tool_choice`
  (they change the prompt and how the answer is parsed), the chat-template options
  (`add_generation_prompt`, `continue_final_message`, `chat_template_kwargs`: they change the
  prompt; in the key only when not the defaults), Responses' `truncation: auto` (an
  answer where the same prompt untruncated is a 400), vLLM's `truncate_prompt_tokens` (it
  changes the prompt) and every sampling parameter
  (`max_tokens`, temperature, top_p, top_k, seed, n, stop, stop_token_ids, ignore_eos,
  logprobs, `logit_bias`, and the grammar of `response_format`/`guided_*`/a forced tool call).
  Delivery options (`stream`, `include_usage`), scheduling hints (`priority`, the session:
  `user`, `prompt_cache_key`), trace labels (`metadata`, `safety_identifier`) and the
  prefix-cache salt are not in the key: the same answer is served streamed or not, however it
  was scheduled and whatever KV blocks it reused. tests/unit/test_cache_key_fields.py holds
  every field of gateway/api_fields.py to this.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from kvmesh.wire import DEFAULT_TEMPLATE, sampling_of

KEY_VERSION = 3  # bump when the cached entry's meaning changes
ANSWER_NEUTRAL = frozenset({"priority", "cache_salt"})  # sampling fields that leave it alone


def cacheable(req: Any) -> bool:
    """`req` is a gateway ParsedRequest (or anything with the same sampling fields)."""
    return req.temperature == 0.0 or req.seed is not None


def cache_key(req: Any, tenant: str, revision: str) -> str:
    """`tenant`: the owner's scope (its name and incarnation, auth/tenant.py)."""
    parts: dict[str, Any] = {
        "v": KEY_VERSION,
        "model": req.model,
        "revision": revision,
        "tenant": tenant,
        "kind": req.kind,
        "messages": None if req.messages is None else [_message(m) for m in req.messages],
        "prompt": req.prompt,
        "prompt_token_ids": req.prompt_token_ids,
        "tools": None if not getattr(req, "tools", None) else [
            dataclasses.astuple(t) for t in req.tools],
        "tool_choice": [getattr(req, "tool_choice", "none"), getattr(req, "tool_name", None),
                        getattr(req, "parallel_tool_calls", True)],
        # only when set, so every other key stays as it was
        **({"truncate": True} if getattr(req, "truncate", False) else {}),
        **({"tail": req.truncate_prompt_tokens}
           if getattr(req, "truncate_prompt_tokens", None) is not None else {}),
        **({"template": dataclasses.astuple(req.template)}
           if getattr(req, "template", DEFAULT_TEMPLATE) != DEFAULT_TEMPLATE else {}),
        # Every sampling field, so one added to the wire is in the key without an edit here;
        # priority only orders the work and the salt only picks KV blocks: same answer.
        **{k: v for k, v in sampling_of(req).items() if k not in ANSWER_NEUTRAL},
    }
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def _message(m: Any) -> list[Any]:
    """A chat message's key part: role and content, plus tool fields only when set (so a
    plain conversation keys as it always did within this key version)."""
    out: list[Any] = [m.role, m.content]
    calls = getattr(m, "tool_calls", None)
    if calls or getattr(m, "tool_call_id", None) or getattr(m, "name", None):
        out += [[dataclasses.astuple(c) for c in calls or []], m.tool_call_id, m.name]
    return out
