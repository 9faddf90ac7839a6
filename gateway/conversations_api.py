"""OpenAI's Conversations API: conversations and their items, kept by the cache actor's store
(cache/conversations_store.py) per tenant.

Routes (the caller's tenant's conversations only; another tenant's id is 404 like an unknown
one, `conversation_not_found`):
- `POST /v1/conversations` {`items`?, `metadata`?, `safety_identifier`?} -> the Conversation
  (`id` `conv_...`, `object: "conversation"`, `created_at`, `metadata`).
- `GET /v1/conversations/{id}`; `POST /v1/conversations/{id}` {`metadata`} replaces the
  metadata; `DELETE /v1/conversations/{id}` -> `{id, object: "conversation.deleted", deleted}`.
- `GET /v1/conversations/{id}/items` (`limit` 1-100, 20; `order` `asc`|`desc`, `desc`;
  `after` an item id) -> `{object: "list", data, first_id, last_id, has_more}`;
  `POST /v1/conversations/{id}/items` {`items`} -> the same list of the items added;
  `GET .../items/{item_id}` -> the item; `DELETE .../items/{item_id}` -> the Conversation.
- Items are what `POST /v1/responses` takes as `input` items (gateway/responses_input.py:
  messages, `function_call`, `function_call_output`), at most `MAX_ITEMS` a request, each
  stored with its id (the one given, else a fresh `msg_...`, `fc_...`, `fco_...`) and
  `status` (`completed` unless given). Errors name the field: `items[2].content[0]`.
- `metadata`: at most 16 string pairs, keys up to 64 characters, values up to 512 (as
  `/v1/responses`' own). `include` (a query parameter of the item routes) is refused unless
  empty: nothing here has more to include. Any other body key or query parameter is 400
  naming it.
- A store that does not answer is 503 `store_unavailable` (gateway/conversations_store_client.py).
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from gateway.auth_client import AUTH
from gateway.body_reads import BODIES
from gateway.conversations_store_client import CONVERSATIONS
from gateway.errors import ApiError, bad_field, check_query, query_int
from gateway.json_body import json_object
from gateway.request_extras import trace_labels
from gateway.responses_input import parse_input
from kvmesh.wire import ConversationFound, ConversationItem, Identity, StoredConversation
from telemetry import tracing

MAX_ITEMS = 20  # items one request may add, as OpenAI
INCLUDE = ("include", "include[]")  # query names of `include`, refused unless empty


def add_conversations_routes(app: web.Application) -> None:
    app.router.add_post("/v1/conversations", create)
    app.router.add_get("/v1/conversations/{id}", retrieve)
    app.router.add_post("/v1/conversations/{id}", update)
    app.router.add_delete("/v1/conversations/{id}", delete)
    app.router.add_get("/v1/conversations/{id}/items", list_items)
    app.router.add_post("/v1/conversations/{id}/items", add_items)
    app.router.add_get("/v1/conversations/{id}/items/{item_id}", retrieve_item)
    app.router.add_delete("/v1/conversations/{id}/items/{item_id}", delete_item)


def conversation_json(found: ConversationFound) -> dict[str, Any]:
    conv = found.conversation
    return {"id": conv.id, "object": "conversation", "created_at": conv.created_at,
            "metadata": conv.metadata}


def stored_items(items: list[dict[str, Any]]) -> list[ConversationItem]:
    """Checked input items (gateway/responses_input.py) as the store keeps them."""
    return [ConversationItem(item["id"], json.dumps(item)) for item in items]


async def _tenant(request: web.Request, allowed: tuple[str, ...] = ()) -> str:
    ident = await _caller(request, allowed)
    return ident.tenant if ident is not None else ""


async def _caller(request: web.Request, allowed: tuple[str, ...] = ()) -> Identity | None:
    ident = await request.app[AUTH].identify(request)  # 401 first
    include = [v for name in INCLUDE for v in request.query.getall(name, []) if v]
    if include:  # the openai client sends `include[]=...`, once per value
        raise ApiError(400, f"include: {include[0]!r} is not supported by this server; a "
                       "conversation's items have nothing more to include", param="include",
                       code="unsupported_parameter")
    check_query(request, (*allowed, *INCLUDE))
    return ident


@contextlib.asynccontextmanager
async def _writing(request: web.Request) -> AsyncIterator[str]:
    """`async with _writing(request) as tenant:` around a change to the store: one request
    from the tenant's `rpm` (429 as a generation's), taken before its body is read; reads
    are not counted (gateway/auth_client.py `counted`)."""
    ident = await _caller(request)
    async with request.app[AUTH].counted(ident, slot=False):
        yield ident.tenant if ident is not None else ""


async def _body(request: web.Request, tenant: str, allowed: frozenset[str]) -> dict[str, Any]:
    body = json_object(await request.app[BODIES].json(request, tenant))
    for name, value in body.items():
        if name not in allowed and value is not None:
            raise ApiError(400, f"{name}: unknown parameter", param=name,
                           code="unknown_parameter")
    return body


def _metadata(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise bad_field("metadata", "must be an object of string pairs")
    trace_labels({"metadata": raw})  # its bounds, as on /v1/responses
    return dict(raw)


def _items(raw: Any, required: bool) -> list[ConversationItem]:
    if raw is None or raw == []:
        if required:
            raise bad_field("items", f"required, an array of 1 to {MAX_ITEMS} input items")
        return []
    if isinstance(raw, list) and len(raw) > MAX_ITEMS:
        raise bad_field("items", f"at most {MAX_ITEMS} items at a time, got {len(raw)}")
    if not isinstance(raw, list):
        raise bad_field("items", "must be an array of input items")
    return stored_items(parse_input(raw, "items")[1])


async def create(request: web.Request) -> web.Response:
    async with _writing(request) as tenant:
        body = await _body(request, tenant,
                           frozenset({"items", "metadata", "safety_identifier"}))
        items = _items(body.get("items"), required=False)
        metadata = _metadata(body.get("metadata"))
        safety = body.get("safety_identifier")
        if safety is not None and not isinstance(safety, str):
            raise bad_field("safety_identifier", "must be a string")
        if safety:
            tracing.set_attributes(**{"kvmesh.safety_identifier": safety})
        conv = StoredConversation(f"conv_{uuid.uuid4().hex}", int(time.time()), metadata)
        found = await request.app[CONVERSATIONS].create(tenant, conv, items)
    return web.json_response(conversation_json(found))


async def retrieve(request: web.Request) -> web.Response:
    tenant = await _tenant(request)
    found = await request.app[CONVERSATIONS].get(tenant, request.match_info["id"])
    return web.json_response(conversation_json(found))


async def update(request: web.Request) -> web.Response:
    async with _writing(request) as tenant:
        body = await _body(request, tenant, frozenset({"metadata"}))
        if "metadata" not in body:
            raise ApiError(400, "metadata: missing required parameter", param="metadata",
                           code="missing_required_parameter")
        found = await request.app[CONVERSATIONS].update(tenant, request.match_info["id"],
                                                        _metadata(body["metadata"]))
    return web.json_response(conversation_json(found))


async def delete(request: web.Request) -> web.Response:
    async with _writing(request) as tenant:
        found = await request.app[CONVERSATIONS].delete(tenant, request.match_info["id"])
    return web.json_response({"id": found.conversation.id, "object": "conversation.deleted",
                              "deleted": True})


async def list_items(request: web.Request) -> web.Response:
    tenant = await _tenant(request, ("limit", "order", "after"))
    order = request.query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise bad_field("order", "must be asc or desc")
    limit = query_int(request, "limit", 20, 1, 100)
    page = await request.app[CONVERSATIONS].items(tenant, request.match_info["id"], limit,
                                                  order, request.query.get("after", ""))
    return _list([json.loads(i.body) for i in page.items], page.has_more)


async def add_items(request: web.Request) -> web.Response:
    async with _writing(request) as tenant:
        body = await _body(request, tenant, frozenset({"items"}))
        items = _items(body.get("items"), required=True)
        page = await request.app[CONVERSATIONS].add(tenant, request.match_info["id"], items)
    return _list([json.loads(i.body) for i in page.items], False)


async def retrieve_item(request: web.Request) -> web.Response:
    tenant = await _tenant(request)
    item = await request.app[CONVERSATIONS].item(tenant, request.match_info["id"],
                                                 request.match_info["item_id"])
    return web.Response(text=item.body, content_type="application/json")


async def delete_item(request: web.Request) -> web.Response:
    async with _writing(request) as tenant:
        found = await request.app[CONVERSATIONS].delete_item(tenant, request.match_info["id"],
                                                             request.match_info["item_id"])
    return web.json_response(conversation_json(found))


def _list(data: list[dict[str, Any]], has_more: bool) -> web.Response:
    return web.json_response({"object": "list", "data": data,
                              "first_id": data[0]["id"] if data else None,
                              "last_id": data[-1]["id"] if data else None,
                              "has_more": has_more})
