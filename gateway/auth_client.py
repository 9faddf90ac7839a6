"""The gateway's side of auth: who is calling, may they, and how much (see auth/service.py).

Contract:
- With `cfg.auth` off every caller is anonymous and nothing is limited; start-up logs a loud
  warning. That is for local development only, and only by explicit setting.
- `identify(request)` reads `Authorization: Bearer <key>`: 401 (`invalid_api_key`) when it is
  missing, not Bearer, malformed, unknown or revoked. It asks the auth actor (`AUTH_VERIFY`) and
  caches the `Identity` for `auth_cache_ttl` seconds under a hash of the key (never the key).
  A `Revoked` broadcast drops the matching entries at once (by key id, or every key of a
  changed tenant), and a verification in flight while one arrives is not cached, so a revoked
  key fails on every gateway as soon as the broadcast lands. The requests a revoked key has
  running end too: with a 401 `key_revoked` (an error event then `[DONE]` once streaming),
  and their workers stop (`MeshClient.end_streams`).
- `admission(ident, req)` holds a generation of `ident` within its tenant's limits: 404 for a
  model outside the tenant's scopes (as for one that does not exist), the tenant's priority
  class and name onto the request, its `max_tokens` cap applied (`cap_max_tokens`: a 400 over
  it, unless the tenant clamps), then admission (429 with Retry-After when over a limit),
  renewal and release as gateway/admission.py says; the handler reports usage with `ticket.settle`.
- 503 with Retry-After when no auth actor answers: a gateway never lets a caller through
  because auth is down.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import time
from typing import Any

from aiohttp import web

from auth.keys import MalformedKey, fingerprint, parse
from gateway import telemetry as telemetry_http
from gateway.admission import Admission, Ticket, reservation
from gateway.errors import ApiError, model_not_found
from gateway.mesh_client import MeshClient
from gateway.openai_request import ParsedRequest
from kvmesh import wire
from kvmesh.actor import NoResponders, RemoteError, RequestTimeout
from kvmesh.wire import AuthOk, Identity, Message, Revoked, VerifyKey
from telemetry.tracing import traced

log = logging.getLogger("kvmesh.gateway.auth")


REVOKED_KEPT = 65_536  # key ids remembered for `check_revoked`: far more than run at once


def unauthorized(message: str) -> ApiError:
    return ApiError(401, message, code="invalid_api_key")


def key_revoked() -> ApiError:
    return ApiError(401, "the API key was revoked while this request ran", code="key_revoked")


class Authenticator:
    def __init__(self, mesh: MeshClient) -> None:
        self.mesh = mesh
        self.cfg = mesh.cfg
        self.enabled = mesh.cfg.auth
        self._cache: dict[str, tuple[Identity, float]] = {}
        self._generation = 0  # bumped by every revocation
        self._revoked: dict[str, None] = {}  # key ids revoked while this process ran, oldest first
        self._admission = Admission(lambda subject, msg: self._ask(subject, msg, AuthOk),
                                    self.cfg.auth_timeout)

    async def start(self, app: web.Application | None = None) -> None:
        if not self.enabled:
            log.warning("*" * 72)
            log.warning(
                "AUTH IS DISABLED (auth=false): every caller is anonymous, unlimited,"
                " and may call every model. Local development only."
            )
            log.warning("*" * 72)
            return
        self.mesh.on_join.append(self._listen_for_revocations)

    async def _listen_for_revocations(self) -> None:
        await self.mesh.serve(wire.AUTH_REVOKED, (Revoked,), self._on_revoked, through_drain=True)

    async def _on_revoked(self, msg: Message, raw: Any) -> None:
        assert isinstance(msg, Revoked)
        self._generation += 1
        ids = set(msg.key_ids)
        for fp, (ident, _) in list(self._cache.items()):
            if ident.key_id in ids or (msg.tenant and ident.tenant == msg.tenant):
                self._cache.pop(fp, None)
        if ids:  # a leaked key stops generating too, not only starting
            self._revoked.update(dict.fromkeys(ids))
            while len(self._revoked) > REVOKED_KEPT:
                del self._revoked[next(iter(self._revoked))]
            self.mesh.end_streams(ids, key_revoked())

    def check_revoked(self, key_id: str) -> None:
        """401 `key_revoked` when `key_id` was revoked after its request was admitted: one
        that waited meanwhile (on a result-cache leader) must not be served or routed."""
        if key_id and key_id in self._revoked:
            raise key_revoked()

    # -- who is calling --------------------------------------------------------------------

    @staticmethod
    def bearer(request: web.Request) -> str:
        header = request.headers.get("Authorization")
        if not header:
            raise unauthorized("no API key: send it as 'Authorization: Bearer <key>'")
        scheme, _, key = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise unauthorized("the Authorization header is malformed; expected 'Bearer <key>'")
        return key.strip()

    async def identify(self, request: web.Request) -> Identity | None:
        """The caller's identity (None when auth is off); ApiError 401/503 as above."""
        if not self.enabled:
            return None
        ident = await self.verify(self.bearer(request))
        telemetry_http.record(request).tenant = ident.tenant  # a 403/429 counts as its refusal
        return ident

    @traced("auth.verify", observe=telemetry_http.auth_verified)
    async def verify(self, key: str) -> Identity:
        try:
            parse(key)
        except MalformedKey:
            raise unauthorized("the API key is malformed") from None
        fp = fingerprint(key)
        hit = self._cache.get(fp)
        now = time.monotonic()
        if hit is not None and hit[1] > now:
            return hit[0]
        generation = self._generation
        ident = await self._ask(wire.AUTH_VERIFY, VerifyKey(key), Identity)
        assert isinstance(ident, Identity)
        if generation == self._generation and self.cfg.auth_cache_ttl > 0:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[fp] = (ident, now + self.cfg.auth_cache_ttl)
        return ident

    async def _ask(self, subject: str, msg: Message, *expected: type[Message]) -> Message:
        try:
            return await self.mesh.request(subject, msg, self.cfg.auth_timeout, *expected)
        except RemoteError as exc:
            raise ApiError.from_reply(exc.reply) from None
        except (NoResponders, RequestTimeout) as exc:
            log.warning("auth unavailable: %s", exc)
            raise ApiError(
                503,
                "the auth service is unavailable",
                "service_unavailable",
                code="auth_unavailable",
                retry_after=self.cfg.retry_after,
            ) from None

    async def require_admin(self, request: web.Request) -> None:
        """Pass the configured admin key or a key of an admin tenant; else 401/403."""
        key = self.bearer(request)
        admin_key = self.cfg.admin_key
        if admin_key and hmac.compare_digest(key.encode(), admin_key.encode()):
            return
        ident = await self.verify(key)
        telemetry_http.caller(request, ident.tenant)
        if not ident.admin:
            raise ApiError(
                403,
                f"tenant {ident.tenant!r} may not use the admin API",
                "permission_error",
                code="not_admin",
            )

    async def require_metrics_key(self, request: web.Request) -> None:
        """With auth on, /metrics on the API port (it names tenants) needs, as a bearer token,
        the metrics key, the admin key or a key of an admin tenant; else 401 (a tenant's key
        that is not an admin's: 403). With auth off it is open."""
        if not self.enabled:
            return
        key = self.bearer(request)
        if any(k and hmac.compare_digest(key.encode(), k.encode())
               for k in (self.cfg.metrics_key, self.cfg.admin_key)):
            return
        try:
            await self.require_admin(request)
        except ApiError as err:
            if err.status != 401:
                raise
            raise unauthorized("/metrics needs the metrics key (or an admin key); or serve "
                               "it on its own port (metrics_port)") from None

    async def admin(self, op: str, args: dict[str, Any]) -> Any:
        reply = await self._ask(wire.AUTH_ADMIN, wire.AdminRequest(op, args), wire.AdminReply)
        assert isinstance(reply, wire.AdminReply)
        return reply.result

    # -- may they, and how much ------------------------------------------------------------

    @staticmethod
    def require_model(ident: Identity | None, model: str) -> None:
        """404 `model_not_found` unless `ident` (None: auth is off) may use `model`: the
        answer a model that does not exist gets, so a key learns nothing of the models
        outside its scopes (OpenAI answers both alike)."""
        if ident is not None and "*" not in ident.models and model not in ident.models:
            raise model_not_found(model)

    def admission(self, ident: Identity | None,
                  req: ParsedRequest) -> contextlib.AbstractAsyncContextManager[Ticket]:
        """`async with auth.admission(ident, req) as ticket:` around a generation of `ident`
        (from `identify`, before the body was read): 404 for a model outside the tenant's
        scopes; the tenant's name, priority class and prefix-cache salt onto `req`, its
        `max_tokens` cap applied (400 over it, unless the tenant clamps); then the tenant's
        limits held for the block (gateway/admission.py). The handler reports the
        real usage with `ticket.settle(tokens)`. With auth off the ticket limits nothing."""
        if ident is None:
            return self._admission.hold(Ticket())
        self.require_model(ident, req.model)
        req.priority = ident.priority
        req.tenant = ident.tenant
        req.key_id = ident.key_id  # a revocation ends its streams (`_on_revoked`)
        req.cache_salt = ident.cache_salt  # its prefix cache is its own, unless it opted in
        req.scope = ident.scope  # a tenant made again under its name gets none of its entries
        cap_max_tokens(req, ident)
        return self._admission.hold(Ticket(
            ident.tenant, rpm=ident.rpm, tpm=ident.tpm, max_concurrency=ident.max_concurrency,
            reserved=reservation(req, ident, self.mesh.models().get(req.model, 0))))

    def counted(self, ident: Identity | None,
                slot: bool = True) -> contextlib.AbstractAsyncContextManager[Ticket]:
        """`async with auth.counted(ident):` around a request that generates nothing
        (`/tokenize`, `/detokenize`): one request from the tenant's `rpm` and (`slot`) one of
        its `max_concurrency` slots while the block runs, no tokens from `tpm` (429 as a
        generation's); with auth off it limits nothing. A change to a store takes no slot: a
        tenant whose slots its generations hold can still cancel, delete and keep its
        conversations."""
        if ident is None:
            return self._admission.hold(Ticket())
        return self._admission.hold(Ticket(ident.tenant, rpm=ident.rpm, max_concurrency=(
            ident.max_concurrency if slot else 0)))


def cap_max_tokens(req: ParsedRequest, ident: Identity) -> None:
    """The tenant's `max_tokens` cap: an absent `max_tokens` becomes the cap; one over it is
    a 400 naming the field and the cap, or lowered to it for a tenant that clamps."""
    cap = ident.max_tokens
    if not cap or (req.max_tokens is not None and req.max_tokens <= cap):
        return
    if req.max_tokens is not None and req.max_tokens_param and not ident.clamp_max_tokens:
        raise ApiError(400, f"{req.max_tokens_param}: {req.max_tokens} is over this tenant's "
                       f"cap of {cap} tokens", param=req.max_tokens_param,
                       code="max_tokens_over_cap")
    req.max_tokens = cap


AUTH = web.AppKey("auth", Authenticator)
