"""The `/v1/conversations` store: conversations and their items in Redis, per tenant, served by
the cache actor beside the `/v1/responses` store (cache/responses_store.py), on its Redis.

Contract (subjects and messages in `kvmesh.wire`, queue group "cache"):
- `ConversationCreate(tenant, conversation, items)` stores a new conversation with its first
  items; `ConversationItemsAdd(tenant, id, items)` appends items (oldest first); all of them
  or none. An item id the conversation already holds refuses the append: 400 naming
  `items[i].id` (i counts within the append), unless the conversation holds every item of
  the append as it is: then it is a retry of an append that landed unanswered (Redis paused
  past `redis_timeout` runs a script it had already received once it resumes), and it
  answers as that append did, adding nothing. Past `conversations_max_items` items it is 400
  `conversation_too_long`; past `conversations_max_bytes` (the conversation's frame and every
  item's JSON) 413 `conversation_too_large`, so that a conversation's whole history fits one
  NATS message. Both answer `ConversationFound` / `ConversationItemsPage` (the items added).
- `ConversationGet`, `ConversationUpdate` (replaces the metadata), `ConversationDelete`,
  `ConversationItemDelete` answer `ConversationFound` (the conversation as it stands, a
  deleted one as it was); `ConversationItemsList` a page (`limit` 0: every item, which is how
  a response reads its history); `ConversationItemGet` a page of that one item.
- An id the tenant does not hold (another tenant's, expired, evicted, deleted, or not a
  conversation id) is 404 `conversation_not_found`; an item id it does not hold 404
  `item_not_found`; a list's `after` that is no item of it 400 naming `after`.
- Every change restarts the conversation's TTL (`conversations_ttl`); reads do not. After a
  change, while the tenant's conversations hold more than `conversations_tenant_bytes`, its
  least recently changed ones are evicted (never the one just changed), and expired ones met
  on the way are dropped from its count.
- `ConversationsPurge(tenant)` deletes every conversation of the tenant (it is being deleted)
  and answers how many there were.
- Redis down or slower than `redis_timeout` is 503 `store_unavailable` at once. The change
  is then unconfirmed, not undone: a Redis that was only paused runs it when it resumes. An
  append tried again with the same items is safe (see above).
- Redis layout, every key of a tenant in one hash slot (`{t:<tenant>}`, Redis Cluster):
  `kvmesh:conv:{t:<tenant>}:<id>` = hash {conv: the `StoredConversation` frame, seq: the next
  item's number, bytes: the conversation's size}; `...:<id>:items` = hash item id -> JSON;
  `...:<id>:order` = sorted set item id -> number (append order); `...:index` = sorted set
  conversation id -> last change (ms); `...:sizes` = hash id -> bytes; `...:bytes` = their
  sum. Every change keeps them together in one Lua script.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from cache.responses_store import ResponseStore, StoreDown
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
    ErrorReply,
    Message,
    StoredConversation,
)

log = logging.getLogger("kvmesh.cache.conversations")
CONVERSATION_ID = re.compile(r"conv_[0-9a-f]{32}")  # what the gateway makes; else 404

# Lua shared by the scripts that change a conversation: `touch` marks it changed now and
# keeps the tenant's keys at least as long as it; `evict` drops the tenant's least recently
# changed conversations, never `keep`, while `total` is over `cap` (expired ones met on the
# way too), and returns how many live ones went.
_SHARED = """
local function touch(conv, index, ttl, now, cid, tenant_keys)
  ttl = tonumber(ttl)
  for _, key in ipairs(conv) do redis.call('PEXPIRE', key, ttl) end
  redis.call('ZADD', index, now, cid)
  for _, key in ipairs(tenant_keys) do
    if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
  end
end
local function evict(prefix, index, sizes, bytes, keep, total, cap)
  local evicted = 0
  while true do
    local oldest = redis.call('ZRANGE', index, 0, 0)[1]
    if not oldest or oldest == keep then break end
    local live = redis.call('EXISTS', prefix .. oldest) == 1
    if live and total <= cap then break end
    if live then evicted = evicted + 1 end
    redis.call('DEL', prefix .. oldest, prefix .. oldest .. ':items', prefix .. oldest .. ':order')
    total = redis.call('DECRBY', bytes, tonumber(redis.call('HGET', sizes, oldest) or '0'))
    redis.call('HDEL', sizes, oldest)
    redis.call('ZREM', index, oldest)
  end
  return evicted
end
"""
# KEYS: conv, items, order, index, sizes, bytes. ARGV: id, "create" (a new one) or not, the
# conversation's frame ("" keeps it), ttl ms, now ms, tenant cap, conversation cap, item cap,
# key prefix, then item id, item JSON pairs. Returns {0, evicted, items}, or {-1} no such
# conversation, {-2, items} too many, {-3, bytes} too large, {-4, i} item i's id is taken.
# An append whose every item the conversation holds as it is (a retry of one that landed
# unanswered) changes nothing and answers {0, 0, items}.
_WRITE = _SHARED + """
local exists = redis.call('EXISTS', KEYS[1]) == 1
if (ARGV[2] == 'create') == exists then return {-1} end
local n = (#ARGV - 9) / 2
local held, taken = 0, -1
for i = 0, n - 1 do
  local body = redis.call('HGET', KEYS[2], ARGV[10 + 2 * i])
  if body then
    if taken < 0 then taken = i end
    if body == ARGV[11 + 2 * i] then held = held + 1 end
  end
end
local count = redis.call('ZCARD', KEYS[3])
if n > 0 and held == n and ARGV[3] == '' then return {0, 0, count} end
if taken >= 0 then return {-4, taken} end
if count + n > tonumber(ARGV[8]) then return {-2, count} end
local size = tonumber(redis.call('HGET', KEYS[1], 'bytes') or '0')
local grow = 0
if ARGV[3] ~= '' then
  grow = string.len(ARGV[3]) - string.len(redis.call('HGET', KEYS[1], 'conv') or '')
end
for i = 0, n - 1 do grow = grow + string.len(ARGV[11 + 2 * i]) end
if size + grow > tonumber(ARGV[7]) then return {-3, size + grow} end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'conv', ARGV[3]) end
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
for i = 0, n - 1 do
  redis.call('HSET', KEYS[2], ARGV[10 + 2 * i], ARGV[11 + 2 * i])
  redis.call('ZADD', KEYS[3], seq + i, ARGV[10 + 2 * i])
end
redis.call('HSET', KEYS[1], 'seq', seq + n, 'bytes', size + grow)
redis.call('HSET', KEYS[5], ARGV[1], size + grow)
local total = redis.call('INCRBY', KEYS[6], grow)
touch({KEYS[1], KEYS[2], KEYS[3]}, KEYS[4], ARGV[4], ARGV[5], ARGV[1], {KEYS[4], KEYS[5], KEYS[6]})
return {0, evict(ARGV[9], KEYS[4], KEYS[5], KEYS[6], ARGV[1], total, tonumber(ARGV[6])),
        count + n}
"""
# KEYS: conv, items, order, index, sizes, bytes. ARGV: id, item id, ttl ms, now ms. Returns
# {0, conversation frame, items left}, {-1} no such conversation, {-2} no such item.
_DELETE_ITEM = _SHARED + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local body = redis.call('HGET', KEYS[2], ARGV[2])
if not body then return {-2} end
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[2])
local shrink = string.len(body)
redis.call('HINCRBY', KEYS[1], 'bytes', -shrink)
redis.call('HINCRBY', KEYS[5], ARGV[1], -shrink)
redis.call('DECRBY', KEYS[6], shrink)
touch({KEYS[1], KEYS[2], KEYS[3]}, KEYS[4], ARGV[3], ARGV[4], ARGV[1], {KEYS[4], KEYS[5], KEYS[6]})
return {0, redis.call('HGET', KEYS[1], 'conv'), redis.call('ZCARD', KEYS[3])}
"""
# KEYS: conv, items, order, index, sizes, bytes. ARGV: id. Returns the deleted
# conversation's frame, or false.
_DELETE = """
local frame = redis.call('HGET', KEYS[1], 'conv')
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('DECRBY', KEYS[6], tonumber(redis.call('HGET', KEYS[5], ARGV[1]) or '0'))
redis.call('HDEL', KEYS[5], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
return frame
"""
# KEYS: conv, items, order. ARGV: after ("": from the start), limit (0: all), "1" for newest
# first. Returns {0, has more, id, JSON, ...}, {-1} no such conversation, {-2} no `after`.
_LIST = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local limit, desc, lo, hi = tonumber(ARGV[2]), ARGV[3] == '1', '-inf', '+inf'
if ARGV[1] ~= '' then
  local at = redis.call('ZSCORE', KEYS[3], ARGV[1])
  if not at then return {-2} end
  if desc then hi = '(' .. at else lo = '(' .. at end
end
local ids
if desc and limit > 0 then
  ids = redis.call('ZREVRANGEBYSCORE', KEYS[3], hi, lo, 'LIMIT', 0, limit + 1)
elseif desc then
  ids = redis.call('ZREVRANGEBYSCORE', KEYS[3], hi, lo)
elseif limit > 0 then
  ids = redis.call('ZRANGEBYSCORE', KEYS[3], lo, hi, 'LIMIT', 0, limit + 1)
else
  ids = redis.call('ZRANGEBYSCORE', KEYS[3], lo, hi)
end
local more = 0
if limit > 0 and #ids > limit then more = 1; table.remove(ids) end
local out = {0, more}
for _, id in ipairs(ids) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', KEYS[2], id) or ''
end
return out
"""
# KEYS: index, sizes, bytes. ARGV: key prefix. Returns the number of conversations deleted.
_PURGE = """
local n = 0
for _, cid in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  n = n + redis.call('EXISTS', ARGV[1] .. cid)
  redis.call('DEL', ARGV[1] .. cid, ARGV[1] .. cid .. ':items', ARGV[1] .. cid .. ':order')
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return n
"""


def prefix(tenant: str) -> str:
    return f"kvmesh:conv:{{t:{tenant}}}:"


def conversation_keys(tenant: str, cid: str) -> list[str]:
    """conv, items, order, index, sizes, bytes (the scripts' KEYS)."""
    p = prefix(tenant)
    return [p + cid, p + cid + ":items", p + cid + ":order", p + "index", p + "sizes",
            p + "bytes"]


def not_found(cid: str) -> ErrorReply:
    return ErrorReply(404, "invalid_request_error", f"Conversation with id {cid!r} not found.",
                      code="conversation_not_found")


def item_not_found(cid: str, item_id: str) -> ErrorReply:
    return ErrorReply(404, "invalid_request_error", f"Item with id {item_id!r} not found in "
                      f"conversation {cid!r}.", code="item_not_found")


class ConversationStore:
    """The conversations handlers, on the responses store's actor and Redis client."""

    def __init__(self, store: ResponseStore) -> None:
        self.store, self.cfg = store, store.cfg
        register = store.redis.register_script
        self._write = register(_WRITE)
        self._delete_item = register(_DELETE_ITEM)
        self._delete = register(_DELETE)
        self._list = register(_LIST)
        self._purge = register(_PURGE)

    async def start(self) -> None:
        handlers = {
            wire.CONVERSATIONS_CREATE: (ConversationCreate, self._on_create),
            wire.CONVERSATIONS_GET: (ConversationGet, self._on_get),
            wire.CONVERSATIONS_UPDATE: (ConversationUpdate, self._on_update),
            wire.CONVERSATIONS_DELETE: (ConversationDelete, self._on_delete),
            wire.CONVERSATIONS_PURGE: (ConversationsPurge, self._on_purge),
            wire.CONVERSATIONS_ITEMS_ADD: (ConversationItemsAdd, self._on_add),
            wire.CONVERSATIONS_ITEMS_LIST: (ConversationItemsList, self._on_list),
            wire.CONVERSATIONS_ITEM_GET: (ConversationItemGet, self._on_item_get),
            wire.CONVERSATIONS_ITEM_DELETE: (ConversationItemDelete, self._on_item_delete),
        }
        for subject, (kind, handler) in handlers.items():
            await self.store.actor.serve(subject, (kind,), self._guard(handler), queue="cache",
                                         max_concurrency=self.cfg.max_concurrency)
        log.info("conversations store: ttl %gs, %d items and %d bytes per conversation, %d "
                 "bytes per tenant", self.cfg.conversations_ttl,
                 self.cfg.conversations_max_items, self.cfg.conversations_max_bytes,
                 self.cfg.conversations_tenant_bytes)

    @staticmethod
    def _guard(handler: Any) -> Any:
        """`handler` with Redis failures answered as 503 `store_unavailable`."""
        async def guarded(msg: Message, raw: Any) -> Message:
            try:
                return await handler(msg)  # type: ignore[no-any-return]
            except StoreDown as exc:  # Redis's words (its address) go to the log only
                log.warning("conversations store: %s", exc)
                return ErrorReply(503, "service_unavailable", "the conversations store is "
                                  "unavailable (its database is unreachable); retry",
                                  code="store_unavailable", retry_after=1.0)
        return guarded

    async def _run(self, script: Any, tenant: str, cid: str, *args: Any) -> Any:
        return await self.store.redis_call(script(keys=conversation_keys(tenant, cid),
                                                  args=[cid, *args]))

    async def _change(self, tenant: str, cid: str, create: bool, frame: bytes,
                      items: list[ConversationItem]) -> ErrorReply | int:
        """Run `_WRITE`; the items the conversation then holds, or the refusal."""
        cfg = self.cfg
        pairs = [x for item in items for x in (item.id, item.body)]
        done = await self._run(self._write, tenant, cid, "create" if create else "",
                               frame, int(cfg.conversations_ttl * 1000),
                               int(time.time() * 1000), cfg.conversations_tenant_bytes,
                               cfg.conversations_max_bytes, cfg.conversations_max_items,
                               prefix(tenant), *pairs)
        code, param = int(done[0]), "items" if items else "metadata"
        if code == -1:
            return not_found(cid)
        if code == -2:
            return ErrorReply(400, "invalid_request_error", f"the conversation holds "
                              f"{int(done[1])} items; this store keeps at most "
                              f"{cfg.conversations_max_items}", param=param,
                              code="conversation_too_long")
        if code == -3:
            return ErrorReply(413, "invalid_request_error", f"the conversation would be "
                              f"{int(done[1])} bytes stored; this store keeps at most "
                              f"{cfg.conversations_max_bytes}", param=param,
                              code="conversation_too_large")
        if code == -4:
            i = int(done[1])
            return ErrorReply(400, "invalid_request_error", f"items[{i}].id: the conversation "
                              f"already holds an item {items[i].id!r}", param=f"items[{i}].id",
                              code="invalid_value")
        if int(done[1]):
            log.info("conversations store: tenant %r over %d bytes; evicted %d conversations",
                     tenant, cfg.conversations_tenant_bytes, int(done[1]))
        return int(done[2])

    async def _on_create(self, msg: Message) -> Message:
        assert isinstance(msg, ConversationCreate)
        conv = msg.conversation
        if not CONVERSATION_ID.fullmatch(conv.id):
            return ErrorReply(400, "invalid_request_error", f"not a conversation id: {conv.id!r}")
        got = await self._change(msg.tenant, conv.id, True, wire.encode(conv), msg.items)
        return got if isinstance(got, ErrorReply) else ConversationFound(conv, got)

    async def _on_update(self, msg: Message) -> Message:
        assert isinstance(msg, ConversationUpdate)
        found = await self._on_get(ConversationGet(msg.tenant, msg.id))
        if not isinstance(found, ConversationFound):
            return found
        conv = StoredConversation(msg.id, found.conversation.created_at, msg.metadata)
        got = await self._change(msg.tenant, msg.id, False, wire.encode(conv), [])
        return got if isinstance(got, ErrorReply) else ConversationFound(conv, got)

    async def _on_add(self, msg: Message) -> Message:
        assert isinstance(msg, ConversationItemsAdd)
        if not CONVERSATION_ID.fullmatch(msg.id):
            return not_found(msg.id)
        got = await self._change(msg.tenant, msg.id, False, b"", msg.items)
        return got if isinstance(got, ErrorReply) else ConversationItemsPage(msg.items)

    async def _on_get(self, msg: Message) -> Message:
        assert isinstance(msg, ConversationGet)
        if not CONVERSATION_ID.fullmatch(msg.id):
            return not_found(msg.id)
        keys = conversation_keys(msg.tenant, msg.id)
        frame = await self.store.redis_call(self.store.redis.hget(keys[0], "conv"))
        if frame is None:
            return not_found(msg.id)
        count = await self.store.redis_call(self.store.redis.zcard(keys[2]))
        return ConversationFound(wire.decode(frame, StoredConversation), int(count))

    async def _on_delete(self, msg: Message) -> Message:
        assert isinstance(msg, ConversationDelete)
        if not CONVERSATION_ID.fullmatch(msg.id):
            return not_found(msg.id)
        frame = await self._run(self._delete, msg.tenant, msg.id)
        if not frame:
            return not_found(msg.id)
        return ConversationFound(wire.decode(frame, StoredConversation))

    async def _on_list(self, msg: Message) -> Message:
        assert isinstance(msg, ConversationItemsList)
        if not CONVERSATION_ID.fullmatch(msg.id):
            return not_found(msg.id)
        keys = conversation_keys(msg.tenant, msg.id)[:3]
        got = await self.store.redis_call(self._list(
            keys=keys, args=[msg.after, msg.limit, int(msg.order == "desc")]))
        if int(got[0]) == -1:
            return not_found(msg.id)
        if int(got[0]) == -2:
            return ErrorReply(400, "invalid_request_error", f"after: no item {msg.after!r} in "
                              "this conversation", param="after", code="invalid_value")
        flat = got[2:]
        items = [ConversationItem(_text(flat[i]), _text(flat[i + 1]))
                 for i in range(0, len(flat), 2) if flat[i + 1]]
        return ConversationItemsPage(items, bool(int(got[1])))

    async def _on_item_get(self, msg: Message) -> Message:
        assert isinstance(msg, ConversationItemGet)
        if not CONVERSATION_ID.fullmatch(msg.id):
            return not_found(msg.id)
        keys = conversation_keys(msg.tenant, msg.id)
        if not await self.store.redis_call(self.store.redis.exists(keys[0])):
            return not_found(msg.id)
        body = await self.store.redis_call(self.store.redis.hget(keys[1], msg.item_id))
        if body is None:
            return item_not_found(msg.id, msg.item_id)
        return ConversationItemsPage([ConversationItem(msg.item_id, _text(body))])

    async def _on_item_delete(self, msg: Message) -> Message:
        assert isinstance(msg, ConversationItemDelete)
        if not CONVERSATION_ID.fullmatch(msg.id):
            return not_found(msg.id)
        done = await self._run(self._delete_item, msg.tenant, msg.id, msg.item_id,
                               int(self.cfg.conversations_ttl * 1000), int(time.time() * 1000))
        if int(done[0]) == -1:
            return not_found(msg.id)
        if int(done[0]) == -2:
            return item_not_found(msg.id, msg.item_id)
        return ConversationFound(wire.decode(done[1], StoredConversation), int(done[2]))

    async def _on_purge(self, msg: Message) -> Message:
        assert isinstance(msg, ConversationsPurge)
        keys = conversation_keys(msg.tenant, "")[3:]
        deleted = await self.store.redis_call(self._purge(keys=keys, args=[prefix(msg.tenant)]))
        log.info("conversations store: tenant %r purged (%d conversations)", msg.tenant, deleted)
        return ConversationsPurged(int(deleted))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
