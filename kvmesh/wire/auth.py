"""The auth actor's messages: gateways ask it (auth/service.py), queue group "auth"."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from kvmesh.wire import codec
from kvmesh.wire.message import Message

AUTH_VERIFY = "kvmesh.auth.verify"  # VerifyKey -> Identity | ErrorReply(401)
AUTH_ADMIT = "kvmesh.auth.admit"  # Admit -> AuthOk | ErrorReply(429, retry_after)
AUTH_SETTLE = "kvmesh.auth.settle"  # Settle -> AuthOk
AUTH_RENEW = "kvmesh.auth.renew"  # Renew -> AuthOk (the slot's lease pushed ahead)
AUTH_ADMIN = "kvmesh.auth.admin"  # AdminRequest -> AdminReply | ErrorReply
AUTH_REVOKED = "kvmesh.auth.revoked"  # Revoked, a broadcast every gateway hears


@dataclass
class VerifyKey(Message):
    """Who holds this API key? (The plain key; the auth actor never stores or logs it.)"""

    KIND: ClassVar[str] = "auth_verify"
    key: str


@dataclass
class Identity(Message):
    """A verified caller: its tenant's scopes, priority (the engine's number) and limits;
    0 = unlimited. A gateway may cache it briefly and must drop it on `Revoked`."""

    KIND: ClassVar[str] = "identity"
    tenant: str
    key_id: str
    models: list[str]
    admin: bool = False
    priority: int = 0
    rpm: int = 0
    tpm: int = 0
    max_concurrency: int = 0
    max_tokens: int = 0
    cache_salt: str = ""  # the tenant's prefix-cache salt (kvmesh/block_hash.py)
    responses_ttl: int = 0  # seconds its stored /v1/responses live; 0 = the store's default
    clamp_max_tokens: bool = False  # over max_tokens: lowered to it, not a 400
    scope: str = ""  # the tenant's name and incarnation: its result-cache entries' owner


@dataclass
class Admit(Message):
    """Take one request from the tenant's rate limits, reserve `tokens` (its worst case:
    prompt estimate + max_tokens) from the token budget, and take a concurrency slot."""

    KIND: ClassVar[str] = "auth_admit"
    tenant: str
    request_id: str
    rpm: int = 0
    tpm: int = 0
    max_concurrency: int = 0
    tokens: int = 0


@dataclass
class Renew(Message):
    """An admitted request still lives: push its concurrency slot's lease ahead."""

    KIND: ClassVar[str] = "auth_renew"
    tenant: str
    request_id: str


@dataclass
class Settle(Message):
    """An admitted request ended: give back its reservation, charge its real token usage,
    free its concurrency slot. Idempotent, so a gateway may retry it. `withdraw`: the request
    was never answered admitted (auth or Redis did not answer, or its client left first): it
    takes nothing, its admission landing before or after this."""

    KIND: ClassVar[str] = "auth_settle"
    tenant: str
    request_id: str
    tokens: int
    tpm: int = 0
    max_concurrency: int = 0
    rpm: int = 0
    withdraw: bool = False


@dataclass
class AuthOk(Message):
    """Yes. To an `Admit` that took a concurrency slot, `lease` is the seconds the slot is
    held without a `Renew`. To an `Admit` under `rpm` or `tpm`, what is left of each right
    after it (tokens after its reservation) and the seconds until that bucket is full again;
    -1 where the tenant has no such limit (gateway/rate_headers.py sends them to the client)."""

    KIND: ClassVar[str] = "auth_ok"
    lease: float = 0.0
    remaining_requests: int = -1
    remaining_tokens: int = -1
    reset_requests: float = 0.0
    reset_tokens: float = 0.0


@dataclass
class AdminRequest(Message):
    """An admin operation (`op`: tenant.put, tenant.get, tenant.list, tenant.delete,
    key.create, key.list, key.revoke)."""

    KIND: ClassVar[str] = "auth_admin"
    op: str
    args: Any = None


@dataclass
class AdminReply(Message):
    KIND: ClassVar[str] = "auth_admin_reply"
    result: Any = None


@dataclass
class Revoked(Message):
    """Keys revoked, or (`tenant` set) a tenant changed: gateways drop cached identities."""

    KIND: ClassVar[str] = "auth_revoked"
    key_ids: list[str] = field(default_factory=list)
    tenant: str = ""


codec.register(
    VerifyKey, Identity, Admit, Renew, Settle, AuthOk, AdminRequest, AdminReply, Revoked)
