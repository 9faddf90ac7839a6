"""Tenants and API keys in Redis.

Layout (every name under `kvmesh:auth:`):
- `tenants`: set of tenant names; `tenant:<name>`: the tenant as JSON.
- `keys`: set of key ids; `key:<id>`: hash with `tenant`, `name`, `salt`, `hash`, `created`,
  `revoked` ("0"/"1"). The plain key and its secret are never written; see `auth.keys`.

A revoked key stays listed (so `list_keys` shows it revoked) but never verifies again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from auth import keys
from auth.keys import KeyId
from auth.tenant import Tenant
from kvmesh.redis_pool import redis_client

NS = "kvmesh:auth:"


@dataclass
class KeyRecord:
    key_id: KeyId
    tenant: str
    name: str
    created: float
    revoked: bool
    salt: str = ""
    hash: str = ""

    def public(self) -> dict[str, Any]:
        """What the admin API shows: never the salt or the hash."""
        return {
            "id": self.key_id,
            "tenant": self.tenant,
            "name": self.name,
            "created": int(self.created),
            "revoked": self.revoked,
        }


class AuthStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis  # decode_responses=True

    @classmethod
    def from_url(cls, url: str, timeout: float | None = None,
                 max_connections: int = 8) -> AuthStore:
        """`timeout`: seconds per Redis call, per connect and per wait for one of the
        `max_connections` connections (None = wait forever); kvmesh/redis_pool.py."""
        return cls(redis_client(url, timeout, max_connections, decode_responses=True))

    async def close(self) -> None:
        await self.redis.aclose()

    # -- tenants ---------------------------------------------------------------------------

    async def update_tenant(self, name: str, change: Callable[[Tenant | None], Tenant]
                            ) -> tuple[Tenant | None, Tenant]:
        """Store `change(the stored tenant or None)` as tenant `name`: (old, new). Atomic: a
        write by another caller between the read and the write makes it read and change
        again (WATCH), so concurrent updates of different fields all land."""
        key = NS + f"tenant:{name}"
        async with self.redis.pipeline(transaction=True) as p:
            while True:
                try:
                    await p.watch(key)
                    raw = await p.get(key)
                    old = None if raw is None else Tenant(**json.loads(raw))
                    new = change(old)
                    p.multi()
                    p.set(key, json.dumps(new.to_dict()))
                    p.sadd(NS + "tenants", name)
                    await p.execute()
                    return old, new
                except WatchError:
                    continue

    async def get_tenant(self, name: str) -> Tenant | None:
        raw = await self.redis.get(NS + f"tenant:{name}")
        return None if raw is None else Tenant(**json.loads(raw))

    async def list_tenants(self) -> list[Tenant]:
        names = sorted(await self.redis.smembers(NS + "tenants"))
        out = []
        for name in names:
            t = await self.get_tenant(name)
            if t is not None:
                out.append(t)
        return out

    async def delete_tenant(self, name: str) -> list[KeyId] | None:
        """Delete the tenant and revoke its keys (their records stay, revoked, for the audit
        trail): the ids revoked, or None when there is no such tenant."""
        if await self.get_tenant(name) is None:
            return None
        live = [r.key_id for r in await self.list_keys(name) if not r.revoked]
        async with self.redis.pipeline(transaction=True) as p:
            p.delete(NS + f"tenant:{name}")
            p.srem(NS + "tenants", name)
            for key_id in live:
                p.hset(NS + f"key:{key_id}", "revoked", "1")
            await p.execute()
        return live

    # -- keys ------------------------------------------------------------------------------

    async def create_key(self, tenant: str, name: str = "") -> tuple[str, KeyRecord]:
        """A new key for an existing tenant: (plain key, shown once; its record)."""
        plain, key_id, secret = keys.generate()
        salt = keys.new_salt()
        rec = KeyRecord(key_id, tenant, name, time.time(), False, salt, keys.digest(salt, secret))
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(
                NS + f"key:{key_id}",
                mapping={
                    "tenant": tenant,
                    "name": name,
                    "salt": salt,
                    "hash": rec.hash,
                    "created": repr(rec.created),
                    "revoked": "0",
                },
            )
            p.sadd(NS + "keys", key_id)
            await p.execute()
        return plain, rec

    async def get_key(self, key_id: str) -> KeyRecord | None:
        h = await self.redis.hgetall(NS + f"key:{key_id}")
        if not h:
            return None
        return KeyRecord(
            KeyId(key_id),
            h["tenant"],
            h.get("name", ""),
            float(h.get("created", 0)),
            h.get("revoked") == "1",
            h["salt"],
            h["hash"],
        )

    async def list_keys(self, tenant: str | None = None) -> list[KeyRecord]:
        out = []
        for key_id in sorted(await self.redis.smembers(NS + "keys")):
            rec = await self.get_key(key_id)
            if rec is not None and (tenant is None or rec.tenant == tenant):
                out.append(rec)
        return sorted(out, key=lambda r: r.created)

    async def revoke_key(self, key_id: str) -> KeyRecord | None:
        rec = await self.get_key(key_id)
        if rec is None:
            return None
        await self.redis.hset(NS + f"key:{key_id}", "revoked", "1")
        rec.revoked = True
        return rec

    async def verify(self, plain: str) -> tuple[KeyRecord, Tenant]:
        """The key's record and tenant; `VerifyError` says why not."""
        try:
            key_id, secret = keys.parse(plain)
        except keys.MalformedKey:
            raise VerifyError("malformed", "the API key is malformed") from None
        rec = await self.get_key(key_id)
        if rec is None or not keys.matches(rec.salt, rec.hash, secret):
            raise VerifyError("unknown", "the API key is not known")
        if rec.revoked:
            raise VerifyError("revoked", f"the API key {key_id} has been revoked")
        tenant = await self.get_tenant(rec.tenant)
        if tenant is None:
            raise VerifyError("unknown", f"the API key's tenant {rec.tenant!r} does not exist")
        return rec, tenant


class VerifyError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
