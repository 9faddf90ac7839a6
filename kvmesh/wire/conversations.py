"""The cache actor's messages for the `/v1/conversations` store (cache/conversations_store.py).

Gateways ask the cache actor, queue group "cache". Every request names the caller's tenant;
a conversation another tenant holds is answered as one that does not exist (404). Items
travel as JSON text (`ConversationItem.body`), like `StoredResponse.input_items`, so the wire
stays typed whatever an item holds; the gateway made and checked them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from kvmesh.wire import codec
from kvmesh.wire.message import Message

# each answers ErrorReply(404 unknown, 400/413 refused, 503 store down) when it does not
CONVERSATIONS_CREATE = "kvmesh.conversations.create"  # ConversationCreate -> ConversationFound
CONVERSATIONS_GET = "kvmesh.conversations.get"  # ConversationGet -> ConversationFound
CONVERSATIONS_UPDATE = "kvmesh.conversations.update"  # ConversationUpdate -> ConversationFound
CONVERSATIONS_DELETE = "kvmesh.conversations.delete"  # ConversationDelete -> ConversationFound
CONVERSATIONS_PURGE = "kvmesh.conversations.purge"  # ConversationsPurge -> ConversationsPurged
CONVERSATIONS_ITEMS_ADD = "kvmesh.conversations.items.add"  # ConversationItemsAdd -> ..Page
CONVERSATIONS_ITEMS_LIST = "kvmesh.conversations.items.list"  # ConversationItemsList -> ..Page
CONVERSATIONS_ITEM_GET = "kvmesh.conversations.item.get"  # ConversationItemGet -> ..Page
CONVERSATIONS_ITEM_DELETE = "kvmesh.conversations.item.delete"  # ConversationItemDelete ->
# ConversationFound


@dataclass
class StoredConversation(Message):
    """A conversation as `GET /v1/conversations/{id}` answers it (its items apart)."""

    KIND: ClassVar[str] = "stored_conversation"
    id: str
    created_at: int
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class ConversationItem(Message):
    """One item of a conversation: its id and the item as JSON text (an object with `id`,
    `type` and, where OpenAI's types carry one, `status`)."""

    KIND: ClassVar[str] = "conversation_item"
    id: str
    body: str


@dataclass
class ConversationCreate(Message):
    """Store a new conversation with its first `items` (oldest first)."""

    KIND: ClassVar[str] = "conversation_create"
    tenant: str
    conversation: StoredConversation
    items: list[ConversationItem] = field(default_factory=list)


@dataclass
class ConversationGet(Message):
    KIND: ClassVar[str] = "conversation_get"
    tenant: str
    id: str


@dataclass
class ConversationUpdate(Message):
    """Replace the conversation's metadata."""

    KIND: ClassVar[str] = "conversation_update"
    tenant: str
    id: str
    metadata: dict[str, str]


@dataclass
class ConversationDelete(Message):
    KIND: ClassVar[str] = "conversation_delete"
    tenant: str
    id: str


@dataclass
class ConversationFound(Message):
    """The conversation as it stands (after the change asked for), and how many items it
    holds."""

    KIND: ClassVar[str] = "conversation_found"
    conversation: StoredConversation
    items: int = 0


@dataclass
class ConversationItemsAdd(Message):
    """Append `items` (oldest first) to the conversation; all or none. An id already in the
    conversation refuses the whole append (400 naming `items[i].id`)."""

    KIND: ClassVar[str] = "conversation_items_add"
    tenant: str
    id: str
    items: list[ConversationItem]


@dataclass
class ConversationItemsList(Message):
    """A page of the conversation's items: up to `limit` (0: every item) after the item
    `after` (""; from the start) in `order` (`asc`: oldest first, or `desc`)."""

    KIND: ClassVar[str] = "conversation_items_list"
    tenant: str
    id: str
    limit: int = 0
    order: str = "asc"
    after: str = ""


@dataclass
class ConversationItemGet(Message):
    KIND: ClassVar[str] = "conversation_item_get"
    tenant: str
    id: str
    item_id: str


@dataclass
class ConversationItemDelete(Message):
    KIND: ClassVar[str] = "conversation_item_delete"
    tenant: str
    id: str
    item_id: str


@dataclass
class ConversationItemsPage(Message):
    """Items, in the order asked for; `has_more`: more follow the last of them."""

    KIND: ClassVar[str] = "conversation_items_page"
    items: list[ConversationItem]
    has_more: bool = False


@dataclass
class ConversationsPurge(Message):
    """Delete every conversation of `tenant` (the tenant is being deleted)."""

    KIND: ClassVar[str] = "conversations_purge"
    tenant: str


@dataclass
class ConversationsPurged(Message):
    KIND: ClassVar[str] = "conversations_purged"
    deleted: int


codec.register(
    StoredConversation, ConversationItem, ConversationCreate, ConversationGet,
    ConversationUpdate, ConversationDelete, ConversationFound, ConversationItemsAdd,
    ConversationItemsList, ConversationItemGet, ConversationItemDelete, ConversationItemsPage,
    ConversationsPurge, ConversationsPurged)
