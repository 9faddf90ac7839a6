"""The gateway's side of the `/v1/conversations` store (cache/conversations_store.py), over NATS.

Contract: each method answers as the store does, or raises `ApiError`: the store's own
refusals as they are (404 `conversation_not_found` / `item_not_found`, 400 naming `items[i].id`
or `after`, 400 `conversation_too_long`, 413 `conversation_too_large`, and 413 for a request
over the NATS max payload), and 503 `store_unavailable` with Retry-After when no store answers
within `store_timeout` (no cache actor, NATS down) or the store's Redis is down. A caller never
waits longer than `store_timeout`.
"""

from __future__ import annotations

from typing import TypeVar

from aiohttp import web

from gateway.errors import ApiError
from gateway.mesh_client import MeshClient
from gateway.responses_store_client import ask_store
from kvmesh import wire
from kvmesh.wire import (
    ConversationCreate,
    ConversationDelete,
    ConversationFound,
    ConversationGet,
    ConversationItem,
    ConversationItemDelete,
    ConversationItemGet,
    ConversationItemsAdd,
    ConversationItemsList,
    ConversationItemsPage,
    ConversationsPurge,
    ConversationsPurged,
    ConversationUpdate,
    Message,
    StoredConversation,
)

Reply = TypeVar("Reply", bound=Message)


class ConversationsStoreClient:
    def __init__(self, actor: MeshClient, timeout: float, retry_after: float) -> None:
        self.actor = actor
        self.timeout = timeout
        self.retry_after = retry_after

    async def create(self, tenant: str, conv: StoredConversation,
                     items: list[ConversationItem]) -> ConversationFound:
        return await self._ask(wire.CONVERSATIONS_CREATE, ConversationCreate(tenant, conv, items),
                               ConversationFound)

    async def get(self, tenant: str, cid: str) -> ConversationFound:
        return await self._ask(wire.CONVERSATIONS_GET, ConversationGet(tenant, cid),
                               ConversationFound)

    async def update(self, tenant: str, cid: str, metadata: dict[str, str]) -> ConversationFound:
        return await self._ask(wire.CONVERSATIONS_UPDATE, ConversationUpdate(tenant, cid, metadata),
                               ConversationFound)

    async def delete(self, tenant: str, cid: str) -> ConversationFound:
        return await self._ask(wire.CONVERSATIONS_DELETE, ConversationDelete(tenant, cid),
                               ConversationFound)

    async def add(self, tenant: str, cid: str,
                  items: list[ConversationItem]) -> ConversationItemsPage:
        return await self._ask(wire.CONVERSATIONS_ITEMS_ADD, ConversationItemsAdd(
            tenant, cid, items), ConversationItemsPage)

    async def items(self, tenant: str, cid: str, limit: int = 0, order: str = "asc",
                    after: str = "") -> ConversationItemsPage:
        """A page of the conversation's items (`limit` 0: all of them, oldest first)."""
        return await self._ask(wire.CONVERSATIONS_ITEMS_LIST, ConversationItemsList(
            tenant, cid, limit, order, after), ConversationItemsPage)

    async def item(self, tenant: str, cid: str, item_id: str) -> ConversationItem:
        page = await self._ask(wire.CONVERSATIONS_ITEM_GET,
                               ConversationItemGet(tenant, cid, item_id), ConversationItemsPage)
        return page.items[0]

    async def delete_item(self, tenant: str, cid: str, item_id: str) -> ConversationFound:
        return await self._ask(wire.CONVERSATIONS_ITEM_DELETE,
                               ConversationItemDelete(tenant, cid, item_id), ConversationFound)

    async def purge(self, tenant: str) -> int:
        """Delete every conversation of `tenant`; how many there were."""
        done = await self._ask(wire.CONVERSATIONS_PURGE, ConversationsPurge(tenant),
                               ConversationsPurged)
        return done.deleted

    async def _ask(self, subject: str, msg: Message, expected: type[Reply]) -> Reply:
        reply = await ask_store(self.actor, subject, msg, self.timeout, expected, ApiError(
            413, "too large for the conversations store", code="conversation_too_large"),
            ApiError(503, "the conversations store is unavailable (it did not answer); retry",
                     "service_unavailable", code="store_unavailable",
                     retry_after=self.retry_after))
        assert isinstance(reply, expected)
        return reply

CONVERSATIONS = web.AppKey("conversations_store", ConversationsStoreClient)
