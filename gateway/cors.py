"""Cross-origin requests (CORS): browser clients on other origins (`GatewayConfig.cors_origins`).

Contract:
- Off by default (`cors_origins` ""): no CORS header is sent, so a page of another origin
  cannot read any answer. Why off: with auth off (local development), allowing every origin
  would let any web page the user opens call the local gateway and read its answers.
- `"*"` allows every origin; otherwise a comma-separated list of exact origins
  (`https://app.example.com,http://localhost:3000`).
- A request from an allowed origin gets `Access-Control-Allow-Origin` (`*`, or its origin with
  `Vary: Origin`) and `Access-Control-Expose-Headers` (`x-request-id`, `Retry-After`,
  `x-kvmesh-gateway`, the `x-ratelimit-*` ones) on every response: errors and streams too
  (set as headers go out).
- A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from an allowed
  origin, on a path the gateway serves, is 204 with the path's methods, the request headers
  asked for, and `Access-Control-Max-Age`; it is answered before auth (browsers send no key
  on a preflight). Any other `OPTIONS`, or one on an unknown path, is the usual 405/404.
- Credentials (cookies) are never allowed: keys travel in the Authorization header.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway import rate_headers

EXPOSED = ", ".join(("x-request-id", "Retry-After", "x-kvmesh-gateway", *rate_headers.NAMES))
MAX_AGE_S = 600
ALLOWED = web.AppKey("cors_origins", frozenset)


def install(app: web.Application, origins: str) -> None:
    """Serve CORS for `origins` (the config's text); nothing at all when it is empty."""
    allowed = frozenset(o.strip() for o in origins.split(",") if o.strip())
    if not allowed:
        return
    app[ALLOWED] = allowed
    app.middlewares.append(_preflight)
    app.on_response_prepare.append(_on_prepare)


def _allow_origin(request: web.Request) -> str | None:
    """The `Access-Control-Allow-Origin` value for this request, None when not allowed."""
    origin = request.headers.get("Origin")
    allowed = request.app[ALLOWED]
    if origin is None:
        return None
    if "*" in allowed:
        return "*"
    return origin if origin in allowed else None


@web.middleware
async def _preflight(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers \
            or _allow_origin(request) is None:
        return await handler(request)
    missing = request.match_info.http_exception
    if missing is not None and missing.status != 405:  # an unknown path stays a 404
        return await handler(request)
    methods = sorted(missing.allowed_methods) if missing is not None else [request.method]
    headers = {"Access-Control-Allow-Methods": ", ".join(methods),
               "Access-Control-Max-Age": str(MAX_AGE_S)}
    asked = request.headers.get("Access-Control-Request-Headers")
    if asked:
        headers["Access-Control-Allow-Headers"] = asked
    return web.Response(status=204, headers=headers)


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    value = _allow_origin(request)
    if value is None:
        return
    response.headers["Access-Control-Allow-Origin"] = value
    response.headers["Access-Control-Expose-Headers"] = EXPOSED
    if value != "*":
        response.headers.add("Vary", "Origin")
