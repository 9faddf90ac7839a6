"""The admin API: tenants and API keys, guarded by the admin key or an admin tenant's key.

Routes (JSON in and out, errors in the OpenAI shape):
- `POST /admin/tenants` {name, models, admin, priority, rpm, tpm, max_concurrency,
  max_tokens, clamp_max_tokens, prefix_cache_group, responses_ttl}: create a tenant, or
  update the fields given of one that exists (a field left out or null keeps its value; a new
  tenant's is the default); gateways drop its cached identities at once.
- `GET /admin/tenants`, `GET /admin/tenants/{name}`.
- `DELETE /admin/tenants/{name}`: delete a tenant, revoke its keys (gateways refuse them
  within a second) and delete its stored responses and conversations: `{name, deleted,
  keys_revoked, responses_deleted, conversations_deleted}`. Its cached results and
  rate-limit state expire on their own.
- `POST /admin/keys` {tenant, name?}: 201 with the new key's record and its plain `key`, the
  only time the key is ever shown.
- `GET /admin/keys[?tenant=...]`: records only (id, tenant, name, created, revoked).
- `DELETE /admin/keys/{id}` (or `POST /admin/keys/{id}/revoke`): revoke; every gateway
  refuses the key within a second and ends its running requests (401 `key_revoked`).
A missing or bad key is 401; a valid key of a tenant that is not admin is 403; a query
parameter a route does not take is a 400 naming it. The auth
actor validates the bodies (auth/service.py): a key they do not define is a 400 naming it
(code `unknown_parameter`), a bad value a 400 (`invalid_value`, `invalid_type`), an unknown
tenant or key a 404 (`tenant_not_found`, `key_not_found`).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.auth_client import AUTH, Authenticator
from gateway.conversations_store_client import CONVERSATIONS
from gateway.errors import ApiError, check_query
from gateway.json_body import json_object, read_json
from gateway.responses_store_client import STORE


def add_admin_routes(app: web.Application) -> None:
    app.router.add_post("/admin/tenants", put_tenant)
    app.router.add_get("/admin/tenants", list_tenants)
    app.router.add_get("/admin/tenants/{name}", get_tenant)
    app.router.add_delete("/admin/tenants/{name}", delete_tenant)
    app.router.add_post("/admin/keys", create_key)
    app.router.add_get("/admin/keys", list_keys)
    app.router.add_delete("/admin/keys/{id}", revoke_key)
    app.router.add_post("/admin/keys/{id}/revoke", revoke_key)


async def _admin(request: web.Request, query: tuple[str, ...] = ()) -> Authenticator:
    """The authenticator, once the caller is known to be an admin and the query holds only
    `query`'s parameters."""
    auth = request.app[AUTH]
    await auth.require_admin(request)
    check_query(request, query)
    return auth


async def _body(request: web.Request) -> dict[str, Any]:
    """The JSON object of an admin body, read as the API's bodies are (json_body.py); none is
    `{}`."""
    cfg = request.app[AUTH].cfg
    if not request.can_read_body:
        return {}
    return json_object(await read_json(request, cfg.max_body_bytes, cfg.body_timeout))


def _list(items: Any) -> web.Response:
    return web.json_response({"object": "list", "data": items})


async def put_tenant(request: web.Request) -> web.Response:
    auth = await _admin(request)
    return web.json_response(await auth.admin("tenant.put", await _body(request)))


async def list_tenants(request: web.Request) -> web.Response:
    auth = await _admin(request)
    return _list(await auth.admin("tenant.list", {}))


async def get_tenant(request: web.Request) -> web.Response:
    auth = await _admin(request)
    return web.json_response(await auth.admin("tenant.get", {"name": request.match_info["name"]}))


async def delete_tenant(request: web.Request) -> web.Response:
    """The tenant and its keys first (nobody can then store more for it), then its stored
    responses and conversations. Idempotent: a retry after the store failed (503) finds no
    tenant and still purges; 404 only when neither the tenant nor any response or
    conversation of it was there."""
    auth = await _admin(request)
    name = request.match_info["name"]
    try:
        out = await auth.admin("tenant.delete", {"name": name})
    except ApiError as exc:
        if exc.status != 404:
            raise
        out = None
    try:
        purged = await request.app[STORE].purge(name)
        conversations = await request.app[CONVERSATIONS].purge(name)
    except ApiError as exc:
        if exc.status != 503:
            raise
        raise ApiError(503, f"tenant {name!r} is deleted and its keys revoked, but its stored "
                       "responses or conversations could not be deleted (the store did not "
                       "answer); send this DELETE again", "service_unavailable",
                       code="store_unavailable", retry_after=exc.retry_after) from None
    if out is None and not purged and not conversations:
        raise ApiError(404, f"no tenant {name!r}, and no stored response or conversation of it "
                       "to delete (a DELETE retried after a 503 finds none once the store "
                       "finished it)", param="name", code="tenant_not_found")
    return web.json_response({"name": name, "deleted": True,
                              "keys_revoked": out["keys_revoked"] if out else 0,
                              "responses_deleted": purged,
                              "conversations_deleted": conversations})


async def create_key(request: web.Request) -> web.Response:
    auth = await _admin(request)
    return web.json_response(await auth.admin("key.create", await _body(request)), status=201)


async def list_keys(request: web.Request) -> web.Response:
    auth = await _admin(request, query=("tenant",))
    return _list(await auth.admin("key.list", {"tenant": request.query.get("tenant")}))


async def revoke_key(request: web.Request) -> web.Response:
    auth = await _admin(request)
    return web.json_response(await auth.admin("key.revoke", {"id": request.match_info["id"]}))
