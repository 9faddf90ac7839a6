"""`POST /v1/responses` with `conversation`: the conversation's items are the history, and the
response's turn is appended to it (the store: cache/conversations_store.py).

Contract:
- `load_history(request, req)`, once the caller is admitted and before the request is routed:
  the conversation's items, oldest first, become the chat history before `input` (as
  `previous_response_id`'s chain would, gateway/responses_calls.py pairing calls and outputs
  over history and input). A conversation the tenant does not hold is 404
  `conversation_not_found` naming `conversation`; an input item whose `id` the conversation
  already holds is 400 naming `input[i].id` (ids page a conversation's items). The items
  are kept on the request: a stored response keeps them before its own input (its
  `input_items` list them first, its history holds them), as OpenAI prepends them.
- `append_turn(request, req, output)`, once the response finished (`completed` or
  `incomplete`) and was stored (with `store`), before its answer or its last event is sent:
  the request's input items, then its output items, are appended to the conversation, with
  or without `store` (as OpenAI). An append the store does not answer is tried again (the
  same items: the store adds them once) for up to `RETRY_S`, `BACKGROUND_RETRY_S` for a
  background response, whose client is not waiting. The store's refusal (the conversation
  deleted meanwhile, over its item or byte cap, down past that) is raised naming
  `conversation`: the response then fails as any error after generation does
  (gateway/responses_api.py stores it `failed`), and a failed or cancelled response appends
  nothing.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from aiohttp import web

from gateway.conversations_api import stored_items
from gateway.conversations_store_client import CONVERSATIONS
from gateway.errors import ApiError, bad_field
from gateway.responses_calls import check_calls_answered
from gateway.responses_input import parse_input
from gateway.responses_request import ResponsesRequest
from gateway.responses_store_client import until_answered

RETRY_S = 10.0  # how long a finished turn's append is tried through a store outage
BACKGROUND_RETRY_S = 300.0  # the same, for a background response (as its last put)


def _named(err: ApiError) -> ApiError:
    return dataclasses.replace(err, param="conversation")


async def load_history(request: web.Request, req: ResponsesRequest) -> None:
    assert req.conversation_id is not None
    try:
        page = await request.app[CONVERSATIONS].items(req.tenant, req.conversation_id)
    except ApiError as err:
        raise _named(err) from None
    items = [json.loads(item.body) for item in page.items]
    held = {item["id"] for item in items}
    for i, item in enumerate(req.input_items):
        if item["id"] in held:
            raise bad_field(f"input[{i}].id", f"the conversation already holds an item "
                            f"{item['id']!r}; each item of a conversation has its own id")
    req.conversation_items = items
    req.conversation_turns = parse_input(items)[0] if items else []
    req.with_history(req.conversation_turns)
    check_calls_answered(req.messages)


async def append_turn(request: web.Request, req: ResponsesRequest,
                      output: list[dict[str, Any]]) -> None:
    if req.conversation_id is None:
        return
    items = stored_items([*req.input_items, *output])
    conversations, cid = request.app[CONVERSATIONS], req.conversation_id
    try:
        await until_answered(lambda: conversations.add(req.tenant, cid, items),
                             BACKGROUND_RETRY_S if req.background else RETRY_S,
                             f"appending a turn to {cid}")
    except ApiError as err:
        raise _named(err) from None
