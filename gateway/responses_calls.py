"""Function calls and their outputs in a Responses conversation, paired as OpenAI pairs them.

Contract: over the whole conversation a request makes (the stored history of its
`previous_response_id` chain, then its own `input`), every `function_call_output` answers a
call made before it, and every call has an output after it. Otherwise the request is 400 with
`param` `input` and OpenAI's words: `No tool call found for function call output with call_id
<id>.` for the first output without its call, `No tool output found for function call <id>.`
for the first call left without an output (a continuation of a response that called a
function must carry that call's output). A model shown a call with no result, or a result of
no call, answers a conversation that never happened.
"""

from __future__ import annotations

from gateway.errors import bad_field
from kvmesh.wire import ChatMessage


def check_calls_answered(messages: list[ChatMessage]) -> None:
    """Raise the 400 above unless `messages` (the conversation, oldest first, as chat turns:
    calls on assistant turns, outputs as tool turns) pairs every call with its output."""
    made: set[str] = set()
    unanswered: dict[str, None] = {}  # calls without an output yet, in the order made
    for msg in messages:
        for call in msg.tool_calls or []:
            made.add(call.id)
            unanswered[call.id] = None
        if msg.role == "tool":
            if msg.tool_call_id not in made:
                raise bad_field("input", "No tool call found for function call output with "
                                f"call_id {msg.tool_call_id}.")
            unanswered.pop(msg.tool_call_id or "", None)
    for call_id in unanswered:  # the first one made
        raise bad_field("input", f"No tool output found for function call {call_id}.")
