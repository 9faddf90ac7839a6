"""Request bodies read with bounds a caller holding a key cannot stretch.

A body is read after its caller's key is known, but before the request is admitted (its
size and its JSON say what it asks): so the tenant's own limits (`max_concurrency`, `rpm`)
cannot bound it. Without these bounds one tenant's clients that send headers and part of a
body, then nothing, would each hold a connection and up to `max_body_bytes` of buffer in the
gateway process for good, until it ran out of memory or file descriptors for every tenant.

Contract: `BodyReads.json(request, tenant)` is `read_json` (gateway/json_body.py) bounded by
- `body_timeout`: a body not whole within it is 408 `body_timeout` (the connection closes);
- `body_reads`: at most that many bodies of one tenant ("" with auth off: every caller) are
  being read in this process at once; one more is 429 `too_many_uploads` with Retry-After,
  at once, before any of its body is read.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.errors import ApiError
from gateway.json_body import read_json
from kvmesh.config import GatewayConfig


class BodyReads:
    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg
        self._reading: dict[str, int] = {}  # tenant -> bodies being read now

    async def json(self, request: web.Request, tenant: str) -> Any:
        """The JSON value of `request`'s body (see the contract)."""
        reading = self._reading.get(tenant, 0)
        if reading >= self.cfg.body_reads:
            raise ApiError(429, f"{reading} request bodies of this tenant are still arriving at "
                           "this gateway; send one when another has been sent",
                           "rate_limit_exceeded", code="too_many_uploads",
                           retry_after=self.cfg.retry_after)
        self._reading[tenant] = reading + 1
        try:
            return await read_json(request, self.cfg.max_body_bytes, self.cfg.body_timeout)
        finally:
            if self._reading[tenant] == 1:
                del self._reading[tenant]
            else:
                self._reading[tenant] -= 1


BODIES = web.AppKey("body_reads", BodyReads)
