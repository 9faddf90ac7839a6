"""The auth actor: `kvmesh serve auth`. Verifies keys, enforces rate limits, runs admin ops.

Contract (every subject in queue group "auth", so replicas share the work; state is in Redis):
- `AUTH_VERIFY` VerifyKey -> Identity, or ErrorReply 401 with code `invalid_api_key` saying
  whether the key is malformed, unknown or revoked.
- `AUTH_ADMIT` Admit -> AuthOk (with the slot's `lease` when a concurrency slot was taken),
  or ErrorReply 429 (`rate_limit_exceeded`) with `retry_after`; a refusal takes nothing.
- `AUTH_RENEW` Renew -> AuthOk: the request's concurrency slot is held `concurrency_lease`
  seconds more (gateways renew a few times per lease while the request lives).
- `AUTH_SETTLE` Settle -> AuthOk: gives back the token reservation, charges the real usage,
  frees the concurrency slot; idempotent (see auth/ratelimit.py).
- `AUTH_ADMIN` AdminRequest -> AdminReply; a bad or unknown argument is a 400 naming it (code
  `invalid_value`, `invalid_type` or `unknown_parameter`), an unknown tenant or key a 404
  (`tenant_not_found`, `key_not_found`). `key.revoke`, `tenant.put` and `tenant.delete` (the
  tenant gone, its keys revoked) publish `Revoked` on `AUTH_REVOKED` after Redis holds the
  change, so every gateway drops its cached identities within milliseconds.
- Plain keys are never logged; log lines name key ids only.
- Redis down or slower than `redis_timeout`: verification and admin ops answer 503
  `auth_unavailable` with `retry_after` (a key is never accepted unchecked). Admission fails
  closed the same way, unless `fail_open` is set: then it admits without limits and logs it.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import redis.exceptions

from auth import telemetry as auth_telemetry
from auth.ratelimit import Headroom, Limits, RateLimiter
from auth.store import AuthStore, VerifyError
from auth.tenant import Tenant, TenantError, updated
from kvmesh import wire
from kvmesh.actor import Actor
from kvmesh.config import AuthConfig, load
from kvmesh.wire import (
    AdminReply,
    AdminRequest,
    Admit,
    AuthOk,
    ErrorReply,
    Identity,
    Message,
    Renew,
    Revoked,
    Settle,
    VerifyKey,
)
from telemetry import propagation, run_service
from telemetry.tracing import traced

log = logging.getLogger("kvmesh.auth")


def identity(key_id: str, tenant: Tenant) -> Identity:
    return Identity(
        tenant=tenant.name,
        key_id=key_id,
        models=list(tenant.models),
        admin=tenant.admin,
        priority=tenant.priority_value,
        rpm=tenant.rpm,
        tpm=tenant.tpm,
        max_concurrency=tenant.max_concurrency,
        max_tokens=tenant.max_tokens,
        cache_salt=tenant.cache_salt,
        scope=tenant.scope,
        responses_ttl=tenant.responses_ttl,
        clamp_max_tokens=tenant.clamp_max_tokens,
    )


class AdminError(Exception):
    """An admin operation refused: its status, the argument at fault and the error code."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str = "invalid_value") -> None:
        super().__init__(message)
        self.status, self.param, self.code = status, param, code


class AuthService(Actor):
    def __init__(self, cfg: AuthConfig, store: AuthStore) -> None:
        super().__init__("auth", cfg.nats_url, cfg.grace_period, propagation)
        self.cfg = cfg
        self.store = store
        self.limiter = RateLimiter(store.redis, cfg.rate_window, cfg.concurrency_lease)

    async def start(self) -> None:
        await self.connect()
        n, m = self.cfg.max_concurrency, auth_telemetry.metrics()
        verify = self._redis_down(self._verify, m.verifications.labels("unavailable").inc)
        await self.serve(wire.AUTH_VERIFY, (VerifyKey,), verify, "auth", n)
        down = "fail_open" if self.cfg.fail_open else "unavailable"
        admit = self._redis_down(self._admit, m.admissions.labels(down, "").inc, admission=True)
        await self.serve(wire.AUTH_ADMIT, (Admit,), admit, "auth", n)
        await self.serve(wire.AUTH_SETTLE, (Settle,), self._redis_down(self._settle), "auth", n)
        await self.serve(wire.AUTH_RENEW, (Renew,), self._redis_down(self._renew), "auth", n)
        await self.serve(wire.AUTH_ADMIN, (AdminRequest,), self._redis_down(self._admin), "auth", 8)
        log.info("auth serving (rate window %gs)", self.cfg.rate_window)

    def _redis_down(self, handler: Any, count: Callable[[], None] | None = None,
                    admission: bool = False) -> Any:
        """`handler`, answering 503 (or, for admission with `fail_open`, AuthOk) when Redis
        fails or times out; `count` is called for each such failure."""

        async def guarded(msg: Message, raw: Any) -> Message:
            try:
                return await handler(msg, raw)
            except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
                if count is not None:
                    count()
                if admission and self.cfg.fail_open:
                    log.warning("redis unavailable (%s): admitting without rate limits", exc)
                    return AuthOk()
                log.warning("redis unavailable (%s): refusing with 503", exc)
                return ErrorReply(
                    503,
                    "service_unavailable",
                    "the auth store (Redis) is unavailable",
                    code="auth_unavailable",
                    retry_after=1.0,
                )

        return guarded

    @traced("auth.lookup_key")
    async def _verify(self, msg: Message, raw: Any) -> Message:
        assert isinstance(msg, VerifyKey)
        try:
            rec, tenant = await self.store.verify(msg.key)
        except VerifyError as exc:
            auth_telemetry.metrics().verifications.labels("invalid").inc()
            return ErrorReply(401, "invalid_request_error", str(exc), code="invalid_api_key")
        auth_telemetry.metrics().verifications.labels("ok").inc()
        return identity(rec.key_id, tenant)

    @traced("auth.admit")
    async def _admit(self, msg: Message, raw: Any) -> Message:
        assert isinstance(msg, Admit)
        refusal, headroom = await self.limiter.admit_with_headroom(
            msg.tenant, msg.request_id, Limits(msg.rpm, msg.tpm, msg.max_concurrency), msg.tokens
        )
        if refusal is not None and refusal.limit == "void":  # its gateway gave up on it
            return ErrorReply(409, "invalid_request_error", "the request was withdrawn before "
                              "its admission", code="admission_withdrawn")
        auth_telemetry.record_headroom(msg.tenant, refusal.limit if refusal else None, headroom)
        if refusal is None:
            auth_telemetry.metrics().admissions.labels("ok", "").inc()
            return self._admitted(msg, headroom)
        auth_telemetry.metrics().admissions.labels("rate_limited", refusal.limit).inc()
        auth_telemetry.metrics().rate_limited.labels(msg.tenant, refusal.limit).inc()
        wait = float(max(1, math.ceil(refusal.retry_after)))  # whole seconds, never too early
        what = {
            "requests": f"requests per window ({msg.rpm})",
            "tokens": f"tokens per window ({msg.tpm})",
            "concurrency": f"concurrent requests ({msg.max_concurrency})",
        }[refusal.limit]
        return ErrorReply(
            429,
            "rate_limit_error",
            f"rate limit reached for tenant {msg.tenant!r}: {what}; retry after {wait:.0f}s",
            code="rate_limit_exceeded",
            retry_after=wait,
        )

    def _admitted(self, msg: Admit, headroom: Headroom) -> AuthOk:
        """The yes to `msg`, with what is left of its tenant's `rpm` and `tpm` (AuthOk)."""
        ok = AuthOk(self.limiter.lease_s if msg.max_concurrency else 0.0)
        window = self.limiter.window_s
        if msg.rpm and headroom.requests is not None:
            ok.remaining_requests = _whole(headroom.requests * msg.rpm)
            ok.reset_requests = (1 - headroom.requests) * window
        if msg.tpm and headroom.tokens is not None:
            ok.remaining_tokens = _whole(headroom.tokens * msg.tpm)
            ok.reset_tokens = (1 - headroom.tokens) * window
        return ok

    async def _settle(self, msg: Message, raw: Any) -> Message:
        assert isinstance(msg, Settle)
        await self.limiter.settle(msg.tenant, msg.request_id,
                                  Limits(msg.rpm, msg.tpm, msg.max_concurrency), msg.tokens,
                                  msg.withdraw)
        return AuthOk()

    async def _renew(self, msg: Message, raw: Any) -> Message:
        assert isinstance(msg, Renew)
        await self.limiter.renew(msg.tenant, msg.request_id)
        return AuthOk(self.limiter.lease_s)

    async def _admin(self, msg: Message, raw: Any) -> Message:
        assert isinstance(msg, AdminRequest)
        args = msg.args if isinstance(msg.args, dict) else {}
        try:
            return AdminReply(await self._run_admin(msg.op, args))
        except AdminError as exc:
            return ErrorReply(exc.status, "invalid_request_error", str(exc), exc.param, exc.code)

    async def _run_admin(self, op: str, args: dict[str, Any]) -> Any:
        store = self.store
        if op == "tenant.put":
            try:
                tenant = updated(None, args)  # its name and fields checked before any read
                _, tenant = await store.update_tenant(tenant.name, lambda old: updated(old, args))
            except TenantError as exc:
                raise AdminError(400, str(exc), exc.param, exc.code) from None
            await self.publish(wire.AUTH_REVOKED, Revoked(tenant=tenant.name))
            log.info("tenant %s saved", tenant.name)
            return tenant.to_dict()
        if op == "tenant.list":
            return [t.to_dict() for t in await store.list_tenants()]
        if op == "tenant.get":
            tenant = await store.get_tenant(str(args.get("name")))
            if tenant is None:
                raise AdminError(404, f"no tenant {args.get('name')!r}", "name",
                                 "tenant_not_found")
            return tenant.to_dict()
        if op == "tenant.delete":
            name = str(args.get("name"))
            revoked = await store.delete_tenant(name)
            if revoked is None:
                raise AdminError(404, f"no tenant {name!r}", "name", "tenant_not_found")
            await self.publish(wire.AUTH_REVOKED, Revoked(key_ids=revoked, tenant=name))
            log.info("tenant %s deleted, %d keys revoked", name, len(revoked))
            return {"name": name, "keys_revoked": len(revoked)}
        if op == "key.create":
            name, key_name = _new_key_args(args)
            if await store.get_tenant(name) is None:
                raise AdminError(404, f"no tenant {name!r}; create it first", "tenant",
                                 "tenant_not_found")
            plain, rec = await store.create_key(name, key_name)
            log.info("key %s created for tenant %s", rec.key_id, name)
            return {**rec.public(), "key": plain}
        if op == "key.list":
            tenant_name = args.get("tenant")
            return [
                r.public()
                for r in await store.list_keys(
                    tenant_name if isinstance(tenant_name, str) else None
                )
            ]
        if op == "key.revoke":
            rec = await store.revoke_key(str(args.get("id")))
            if rec is None:
                raise AdminError(404, f"no key {args.get('id')!r}", "id", "key_not_found")
            await self.publish(wire.AUTH_REVOKED, Revoked(key_ids=[rec.key_id]))
            log.info("key %s of tenant %s revoked", rec.key_id, rec.tenant)
            return rec.public()
        raise AdminError(400, f"unknown admin operation {op!r}", "op")


def _new_key_args(args: dict[str, Any]) -> tuple[str, str]:
    """(tenant, key name) of a `key.create`; AdminError 400 for any other or mistyped key."""
    for key in args:
        if key not in ("tenant", "name"):
            raise AdminError(400, f"{key}: unknown field (known: name, tenant)", key,
                             "unknown_parameter")
    tenant, name = args.get("tenant"), args.get("name")
    if not isinstance(tenant, str):
        raise AdminError(400, "tenant: required, a tenant's name", "tenant", "invalid_type")
    if not isinstance(name, str | None):
        raise AdminError(400, "name: must be a string", "name", "invalid_type")
    return tenant, name or ""


def _whole(level: float) -> int:
    """A bucket's whole units: the share Redis answered is rounded to 14 digits, so 59 of 60
    comes back as 58.99999999999998."""
    return math.floor(level + 1e-6)


async def serve(cfg: AuthConfig) -> None:
    store = AuthStore.from_url(cfg.redis_url, cfg.redis_timeout, cfg.max_concurrency)
    service = AuthService(cfg, store)
    service.on_drain.append(store.close)
    await service.start()
    await service.run_until_stopped()


def main(argv: Sequence[str] | None = None) -> int:
    cfg = load(AuthConfig, sys.argv[1:] if argv is None else argv)
    return run_service("auth", f"auth-{os.getpid()}", serve(cfg), cfg.log_level,
                       cfg.metrics_port, cfg.metrics_host)


if __name__ == "__main__":
    sys.exit(main())
