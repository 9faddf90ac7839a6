"""`x-request-id`: the id of one HTTP request, on every response and in every log line and
trace of that request.

Contract:
- The id is the client's `X-Request-Id` when it is valid (1-128 printable ASCII characters, no
  spaces), else ours: a generation's response id (`chatcmpl-...`, `cmpl-...`, adopted by
  the handler through `adopt`) or, for anything else, `req_<32 hex>`.
- It is on every response the gateway sends: success, error (any status, any route) and
  streamed (set when the headers go out, `on_response_prepare`).
- For the whole request it is `telemetry.propagation.request_id_var`, so the gateway's log
  lines carry it (the access line too), and the NATS header `Kvmesh-Request-Id` carries it to
  the router's and worker's log lines; the gateway's server span records it as
  `kvmesh.x_request_id` (`kvmesh trace <id>` finds the trace by it).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from aiohttp import web

from telemetry.propagation import request_id_var

HEADER = "x-request-id"
_VALID = re.compile(r"^[\x21-\x7e]{1,128}$")
REQUEST_ID = web.RequestKey("kvmesh.request_id", str)
FROM_CLIENT = web.RequestKey("kvmesh.request_id_from_client", bool)


def client_request_id(value: str | None) -> str | None:
    """The client's id if it is valid, else None (an invalid one is replaced, not refused)."""
    return value if value is not None and _VALID.match(value) else None


@web.middleware
async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Put it outermost: the id must be set before any other middleware logs or traces."""
    given = client_request_id(request.headers.get(HEADER))
    rid = given or f"req_{uuid.uuid4().hex}"
    request[REQUEST_ID], request[FROM_CLIENT] = rid, given is not None
    token = request_id_var.set(rid)
    try:
        return await handler(request)
    finally:
        request_id_var.reset(token)


def adopt(request: web.Request, response_id: str) -> str:
    """A generation got its response id: unless the client named the request, that id is
    the request's from now on. Returns the request's id."""
    if not request.get(FROM_CLIENT, False):
        request[REQUEST_ID] = response_id
        request_id_var.set(response_id)
    return request.get(REQUEST_ID, response_id)


async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """aiohttp's `on_response_prepare`: the header on every response, streamed ones too."""
    rid = request.get(REQUEST_ID)
    if rid is not None:
        response.headers[HEADER] = rid
