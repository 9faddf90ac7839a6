"""Cutting a prompt to fit: a conversation's oldest turns dropped (Responses `truncation:
auto`), or a prompt's tokens kept from the end (vLLM's `truncate_prompt_tokens`).

Contract: `truncate(messages, encode, fits)` gives the token ids of the longest tail of the
conversation that fits, or None when even the shortest does not.
- The leading system (and developer) messages are always kept: they are the instructions.
- The kept conversation is the whole one, or a tail that starts at a user message (every
  template expects one after the system turns; a tool result without its call, or an answer
  without its question, is not a turn a model was trained on), and always holds the last
  user message and all after it. Turns before the first user message (a conversation's
  stored answer, say) go with the first cut.
- Fewer turns never make a longer prompt, so the cut is found by bisection: about log2(turns)
  renders and tokenizations, each of a shorter conversation.

`tail_size(keep, context, reserved)` is how many of a prompt's last tokens
`truncate_prompt_tokens: keep` keeps: `keep` (at most the context, else ValueError), or for -1
the most that leave `reserved` tokens of the context free.
"""

from __future__ import annotations

from collections.abc import Callable

from kvmesh.wire import ChatMessage

_INSTRUCTIONS = frozenset({"system", "developer"})


def cut_points(messages: list[ChatMessage]) -> list[int]:
    """The indices where a kept tail may start: where the instructions end (the whole
    conversation), then each user message after that."""
    head = next((i for i, m in enumerate(messages) if m.role not in _INSTRUCTIONS),
                len(messages))
    return [head, *(i for i in range(head + 1, len(messages)) if messages[i].role == "user")]


def truncate(messages: list[ChatMessage], encode: Callable[[list[ChatMessage]], list[int]],
             fits: Callable[[int], bool]) -> list[int] | None:
    """Token ids of the instructions plus the longest tail that `fits` (a prompt length), or
    None when none does (or the conversation has no user message to keep)."""
    cuts = cut_points(messages)
    if not any(m.role == "user" for m in messages[cuts[0]:]):
        return None
    head = messages[:cuts[0]]
    lo, hi, best = 0, len(cuts) - 1, None  # cuts[hi] keeps the least
    while lo <= hi:
        mid = (lo + hi) // 2
        ids = encode([*head, *messages[cuts[mid]:]])
        if fits(len(ids)):
            best, hi = ids, mid - 1
        else:
            lo = mid + 1
    return best


def tail_size(keep: int, context: int, reserved: int, most: int | None = None) -> int:
    """Tokens kept from a prompt's end under `truncate_prompt_tokens: keep` on a model whose
    largest context is `context`, with `reserved` tokens needed after the prompt (its
    `max_tokens`, at least 1: a prompt leaves room for a token). -1 keeps the most that fit
    (at least one: a prompt that cannot fit then fails the context check, naming
    `max_tokens`); a `keep` over `most` (the context unless given: an embedding input's
    limit is one less) raises ValueError, as vLLM refuses one over the context."""
    if keep == -1:
        return max(1, context - reserved)
    most = context if most is None else most
    if keep > most:
        raise ValueError(f"truncate_prompt_tokens ({keep}) is greater than this model's "
                         f"limit ({most} tokens)")
    return keep
