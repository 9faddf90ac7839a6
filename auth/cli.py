"""`kvmesh keys create|list|revoke`: manage API keys straight in Redis (operators, `kvmesh up`).

The plain key is printed once, by `create`, and stored nowhere. `revoke` (and a `create` that
changes a tenant) also broadcast `Revoked` over NATS so gateways drop cached identities at
once; if NATS is unreachable the change still holds once the gateways' caches expire.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

from auth.store import AuthStore
from auth.tenant import PRIORITY_CLASSES, TenantError, updated
from kvmesh import local_urls

TENANT_FIELDS = ("rpm", "tpm", "max_concurrency", "max_tokens", "responses_ttl")


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    keys = sub.add_parser("keys", help="manage API keys and tenants")
    keys.add_argument(
        "--redis-url", default=local_urls.redis_url(),
        help="default $KVMESH_REDIS_URL, else kvmesh up's (<state dir>/redis.url, it has a "
             "password), else redis://127.0.0.1:6379/0"
    )
    keys.add_argument(
        "--nats-url", default=local_urls.nats_url(),
        help="default $KVMESH_NATS_URL, else kvmesh up's (<state dir>/nats-ops.url), else "
             "nats://127.0.0.1:4222"
    )
    action = keys.add_subparsers(dest="keys_command", metavar="ACTION")
    create = action.add_parser("create", help="create a key (and its tenant when new)")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", default="", help="a label for the key")
    create.add_argument("--models", help="comma-separated model names, or * (default *)")
    create.add_argument(
        "--admin", action="store_true", default=None, help="the tenant may use the admin API"
    )
    create.add_argument("--priority", choices=list(PRIORITY_CLASSES))
    create.add_argument("--clamp-max-tokens", action="store_true", default=None,
                        help="lower a request's max_tokens over the cap to it (default: 400)")
    create.add_argument("--prefix-cache-group",
                        help="share cached prompt prefixes with tenants of this group")
    for f in TENANT_FIELDS:
        create.add_argument("--" + f.replace("_", "-"), type=int,
                            help="seconds; 0 = the store's default" if f == "responses_ttl"
                            else "0 = unlimited")
    create.set_defaults(func=lambda a: _run(_create(a)))
    ls = action.add_parser("list", help="list keys (never their secrets)")
    ls.add_argument("--tenant")
    ls.set_defaults(func=lambda a: _run(_list(a)))
    revoke = action.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    revoke.set_defaults(func=lambda a: _run(_revoke(a)))
    keys.set_defaults(func=lambda a: (keys.print_help(sys.stderr), 2)[1])


def _run(coro: Any) -> int:
    """Run a command; an invalid tenant or an unreachable or refusing Redis is one line on
    stderr and exit status 1, not a traceback."""
    from redis.exceptions import RedisError

    try:
        return int(asyncio.run(coro))
    except (TenantError, ConnectionError, OSError) as exc:
        print(f"kvmesh: {exc}", file=sys.stderr)
        return 1
    except RedisError as exc:
        print(f"kvmesh: Redis: {exc}", file=sys.stderr)
        return 1


async def create_key(
    redis_url: str, tenant: dict[str, Any], name: str = "", nats_url: str | None = None
) -> tuple[str, str]:
    """Create or update `tenant` (fields as the admin API takes them; existing values kept
    where absent) and a key for it: (plain key, key id)."""
    store = AuthStore.from_url(redis_url)
    try:
        name_ = updated(None, tenant).name  # checked before anything is read
        old, t = await store.update_tenant(name_, lambda old: updated(old, tenant))
        if old is not None and old != t and nats_url:
            await _broadcast(nats_url, tenant=t.name)
        plain, rec = await store.create_key(t.name, name)
        return plain, rec.key_id
    finally:
        await store.close()


async def _create(a: argparse.Namespace) -> int:
    fields: dict[str, Any] = {"name": a.tenant}
    if a.models is not None:
        fields["models"] = [m.strip() for m in a.models.split(",") if m.strip()]
    if a.admin is not None:
        fields["admin"] = a.admin
    if a.priority is not None:
        fields["priority"] = a.priority
    if a.prefix_cache_group is not None:
        fields["prefix_cache_group"] = a.prefix_cache_group
    if a.clamp_max_tokens is not None:
        fields["clamp_max_tokens"] = a.clamp_max_tokens
    for f in TENANT_FIELDS:
        if getattr(a, f) is not None:
            fields[f] = getattr(a, f)
    plain, key_id = await create_key(a.redis_url, fields, a.name, a.nats_url)
    print(f"key {key_id} for tenant {a.tenant} (shown once, keep it):\n{plain}")
    return 0


async def _list(a: argparse.Namespace) -> int:
    store = AuthStore.from_url(a.redis_url)
    try:
        for rec in await store.list_keys(a.tenant):
            state = "revoked" if rec.revoked else "active"
            print(f"{rec.key_id}  {rec.tenant:<20} {state:<8} {rec.name}")
    finally:
        await store.close()
    return 0


async def _revoke(a: argparse.Namespace) -> int:
    store = AuthStore.from_url(a.redis_url)
    try:
        rec = await store.revoke_key(a.key_id)
    finally:
        await store.close()
    if rec is None:
        print(f"kvmesh: no key {a.key_id}", file=sys.stderr)
        return 1
    await _broadcast(a.nats_url, key_ids=[rec.key_id])
    print(f"key {rec.key_id} of tenant {rec.tenant} revoked")
    return 0


async def _broadcast(nats_url: str, key_ids: list[str] | None = None, tenant: str = "") -> None:
    """Tell the gateways to drop cached identities. Best effort and bounded: at most two
    connection attempts (nats-py retries an unreachable server for ever unless
    `max_reconnect_attempts` is positive, and refused credentials too unless reconnecting is
    off), a 2 s flush; on failure a notice on stderr, since the change in Redis holds anyway
    once the gateways' caches expire."""
    import nats

    from kvmesh import wire
    from telemetry.redact import redact  # hides the URL's password

    async def quiet(_exc: Exception) -> None:  # reported below, once, without a traceback
        return None

    try:
        nc = await nats.connect(nats_url, connect_timeout=2, allow_reconnect=False,
                                max_reconnect_attempts=1, reconnect_time_wait=0.1,
                                error_cb=quiet)
    except Exception as exc:
        print(f"kvmesh: NATS at {redact(nats_url)} unreachable ({exc or type(exc).__name__}):"
              " gateways drop the change when their key cache expires", file=sys.stderr)
        return
    try:
        await nc.publish(wire.AUTH_REVOKED, wire.encode(wire.Revoked(key_ids or [], tenant)))
        await nc.flush(timeout=2)
    except Exception as exc:
        print(f"kvmesh: the NATS broadcast failed ({exc or type(exc).__name__}): gateways drop"
              " the change when their key cache expires", file=sys.stderr)
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
