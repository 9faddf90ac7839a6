"""The prompt side of a completions body: one prompt or a batch of them, `echo`, `suffix`.

Contract (each bad value is a 400 naming its field):
- `prompt` is a non-empty string, a non-empty array of token ids, or an array of up to
  `MAX_PROMPTS` of those (a batch; a batch of one is one prompt). A single prompt sets
  `prompt` or `prompt_token_ids`; a batch sets `prompts`, answered as one response whose
  choice `index` is prompt_i * n + j (gateway/prompt_batch.py).
- `echo: true` starts each choice's text with its prompt; with `logprobs: k` the choice's
  logprobs cover the prompt's tokens too (the engine's `prompt_logprobs`, k top ones each).
  `max_tokens: 0` is allowed with echo only: score the prompt, generate nothing.
- `suffix` (fill-in-the-middle) is refused: no served model has it.
"""

from __future__ import annotations

from typing import Any, Protocol

from gateway.errors import bad_field

MAX_PROMPTS = 2048
INT_LIMIT = 1 << 63  # the wire (msgpack) holds int64
Prompt = str | list[int]


class PromptFields(Protocol):
    prompt: str | None
    prompt_token_ids: list[int] | None
    prompts: list[Prompt] | None
    echo: bool
    max_tokens: int | None
    logprobs: int | None
    prompt_logprobs: int | None


def parse_prompts(body: dict[str, Any], req: PromptFields) -> None:
    """Set `req`'s prompt (or batch of prompts) from `body["prompt"]`."""
    raw = body.get("prompt")
    if raw is None:
        raise bad_field("prompt", "required")
    batch = isinstance(raw, list) and bool(raw) and all(isinstance(p, str | list) for p in raw)
    if not batch:
        _set_one(req, _one(raw, "prompt"))
        return
    if len(raw) > MAX_PROMPTS:
        raise bad_field("prompt", f"at most {MAX_PROMPTS} prompts in one request, got {len(raw)}")
    prompts = [_one(p, f"prompt[{i}]") for i, p in enumerate(raw)]
    if len(prompts) == 1:
        _set_one(req, prompts[0])
    else:
        req.prompts = prompts


def parse_echo(body: dict[str, Any], req: PromptFields) -> None:
    """`echo`, and what it allows (`max_tokens: 0`) and implies (prompt logprobs); `suffix`.
    Call after `max_tokens` and `logprobs` are parsed."""
    if body.get("suffix") is not None:
        raise bad_field("suffix", "not supported: the served models have no fill-in-the-middle")
    echo = body.get("echo")
    if echo is not None and not isinstance(echo, bool):
        raise bad_field("echo", f"must be a boolean, got {type(echo).__name__}")
    req.echo = bool(echo)
    if req.max_tokens == 0 and not req.echo:
        raise bad_field("max_tokens", "must be at least 1 (0 only with echo: score the prompt)")
    if req.echo and req.logprobs is not None:
        req.prompt_logprobs = req.logprobs


def _one(p: Any, where: str) -> Prompt:
    if isinstance(p, str):
        if not p:
            raise bad_field(where, "must not be empty")
        return p
    if isinstance(p, list) and p and all(type(t) is int and 0 <= t < INT_LIMIT for t in p):
        return list(p)
    raise bad_field(where, "must be a non-empty string or array of token ids")


def _set_one(req: PromptFields, p: Prompt) -> None:
    if isinstance(p, str):
        req.prompt = p
    else:
        req.prompt_token_ids = p
