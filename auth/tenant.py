"""Tenants: who may call which models, at which priority, how much.

A tenant is a named customer of the mesh; every API key belongs to one. Its fields:
- `models`: model names it may call; `["*"]` means every model.
- `admin`: may use the admin API (`/admin/...`).
- `priority`: a class name from `PRIORITY_CLASSES`; the class's number travels with each
  request as `GenerateRequest.priority`, and the engine admits higher numbers first and
  preempts lower numbers first.
- `rpm`, `tpm`: requests and tokens (prompt + completion) per rate window (a minute in
  production); 0 = unlimited. `max_concurrency`: requests in flight at once; 0 = unlimited.
- `max_tokens`: cap on a request's `max_tokens`; 0 = no cap. An absent `max_tokens` becomes
  the cap; a larger one is a 400 that says the cap, unless `clamp_max_tokens` is set, when
  it is lowered to the cap (the answer then ends with `finish_reason: length`).
- `responses_ttl`: seconds its stored `/v1/responses` answers live; 0 = the store's default
  (`responses_ttl` of the cache actor, 30 days).
- `prefix_cache_group`: "" (the default) keeps the tenant's prefix-cache blocks to itself, so
  no other tenant can tell what it asked (kvmesh/block_hash.py); tenants that set the same
  group name share cached prefixes (e.g. a common system prompt) with each other only.
- `incarnation`: set by the mesh when the tenant is created, never by the admin API (400):
  a tenant deleted and created again under its name is another customer, so its result-cache
  entries and its private prefix-cache blocks are keyed by name and incarnation, and the old
  one's (which expire on their own) never reach the new one. Tenants stored before it have
  "" (keyed by name alone, as then).
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

PRIORITY_CLASSES: dict[str, int] = {"low": -1, "normal": 0, "high": 1}
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")  # whole string: fullmatch
LIMIT = 1 << 53  # limits run as Lua numbers (doubles) in Redis: exact below this


class TenantError(ValueError):
    """A tenant field with a bad value, or one a tenant does not have; the message names the
    field, `code` says which (as the gateway's 400s do)."""

    def __init__(self, param: str, why: str, code: str = "invalid_value") -> None:
        super().__init__(f"{param}: {why}")
        self.param, self.code = param, code


@dataclass
class Tenant:
    name: str
    models: list[str] = field(default_factory=lambda: ["*"])
    admin: bool = False
    priority: str = "normal"
    rpm: int = 0
    tpm: int = 0
    max_concurrency: int = 0
    max_tokens: int = 0
    prefix_cache_group: str = ""
    responses_ttl: int = 0
    clamp_max_tokens: bool = False
    incarnation: str = ""

    @property
    def priority_value(self) -> int:
        return PRIORITY_CLASSES[self.priority]

    @property
    def cache_salt(self) -> str:
        """The salt at the root of this tenant's prefix-cache chain."""
        if self.prefix_cache_group:
            return "group:" + self.prefix_cache_group
        return "tenant:" + self.scope

    @property
    def scope(self) -> str:
        """The name, with the incarnation: what the tenant's cached state is keyed by."""
        return f"{self.name}#{self.incarnation}" if self.incarnation else self.name

    def allows(self, model: str) -> bool:
        return "*" in self.models or model in self.models

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, body: Any) -> Tenant:
        """Validate a JSON object into a Tenant; TenantError names the bad field."""
        _check_known(body)
        name = body.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):  # match() took "a\n"
            raise TenantError("name", "1-64 characters of letters, digits, '.', '_' or '-'")
        t = cls(name)
        models = body.get("models", t.models)
        if isinstance(models, str):
            models = [m for m in models.split(",") if m]
        if (
            not isinstance(models, list)
            or not models
            or not all(isinstance(m, str) and m and m == m.strip() for m in models)
        ):
            raise TenantError("models", "a non-empty list of model names (no blank one), or "
                              "['*']")
        t.models = list(models)
        admin = body.get("admin", False)
        if not isinstance(admin, bool):
            raise TenantError("admin", "must be true or false")
        t.admin = admin
        clamp = body.get("clamp_max_tokens", False)
        if not isinstance(clamp, bool):
            raise TenantError("clamp_max_tokens", "must be true or false")
        t.clamp_max_tokens = clamp
        priority = body.get("priority", t.priority)
        if priority not in PRIORITY_CLASSES:
            raise TenantError("priority", f"one of {', '.join(PRIORITY_CLASSES)}")
        t.priority = priority
        for name_ in ("rpm", "tpm", "max_concurrency", "max_tokens", "responses_ttl"):
            value = body.get(name_, 0)
            if value is None:
                value = 0
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < LIMIT:
                zero = "the store's default" if name_ == "responses_ttl" else "unlimited"
                raise TenantError(name_, f"a whole number in [0, {LIMIT}) (0 = {zero})")
            setattr(t, name_, value)
        group = body.get("prefix_cache_group") or ""
        if not isinstance(group, str) or (group and not _NAME.fullmatch(group)):
            raise TenantError("prefix_cache_group",
                              "empty (private), or 1-64 letters, digits, '.', '_' or '-'")
        t.prefix_cache_group = group
        return t


def _check_known(body: Any) -> None:
    """TenantError unless `body` is an object of Tenant's fields only (null ones too: a
    misspelt limit must not leave the tenant unlimited unnoticed)."""
    if not isinstance(body, dict):
        raise TenantError("body", "expected a JSON object")
    known = [f.name for f in dataclasses.fields(Tenant)]
    for key in body:
        if key not in known:
            raise TenantError(key, f"unknown field (known: {', '.join(sorted(known))})",
                              "unknown_parameter")


def updated(old: Tenant | None, fields: Any) -> Tenant:
    """The tenant `fields` (the admin API's body) makes of `old` (None: a new one): each field
    given replaces the stored one, and one left out or null keeps it (a new tenant's default),
    so raising one limit never resets the others or widens `models`. TenantError as
    `Tenant.from_dict`."""
    _check_known(fields)
    if fields.get("incarnation") is not None:
        raise TenantError("incarnation", "set by the mesh when the tenant is created")
    given = {k: v for k, v in fields.items() if v is not None}
    new = Tenant.from_dict({**(old.to_dict() if old is not None else {}), **given})
    new.incarnation = old.incarnation if old is not None else secrets.token_hex(8)
    return new
