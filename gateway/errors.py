"""Errors a client sees, in the OpenAI shape `{"error": {"message", "type", "param", "code"}}`.

`ApiError` is raised anywhere in the gateway and becomes a JSON response with its HTTP status
(and `Retry-After` when set); inside a started SSE stream it becomes an error event instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from kvmesh import wire
from kvmesh.wire import ErrorReply


@dataclass
class ApiError(Exception):
    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None
    retry_after: float | None = None

    def __str__(self) -> str:
        return f"{self.status} {self.message}"

    @classmethod
    def from_reply(cls, reply: ErrorReply) -> ApiError:
        return cls(reply.status, reply.message, reply.type, reply.param, reply.code,
                   reply.retry_after)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}

    def response(self) -> web.Response:
        headers = {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, round(self.retry_after)))
        return web.Response(status=self.status, text=json.dumps(self.body()),
                            content_type="application/json", headers=headers)


def bad_field(param: str, why: str) -> ApiError:
    """A 400 for one field; the message names it."""
    return ApiError(400, f"{param}: {why}", param=param, code="invalid_value")


def check_query(request: web.Request, allowed: tuple[str, ...] = ()) -> None:
    """A 400 naming the first query parameter of `request` outside `allowed`, or given more
    than once: a misspelt filter must not silently widen an answer."""
    for name in request.query:
        if name not in allowed:
            raise bad_field(name, "query parameter not supported")
        if len(request.query.getall(name)) > 1:  # which one would count is a guess
            raise bad_field(name, "query parameter given more than once")


def query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    """Query parameter `name` as an integer in [lo, hi] (`default` when absent); a 400 naming
    it otherwise. ASCII digits only: `int()` reads other scripts' digits, and a superscript
    passes `isdigit()` but not `int()`."""
    raw = request.query.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not lo <= int(raw) <= hi:
        raise bad_field(name, f"must be an integer in [{lo}, {hi}]")
    return int(raw)


def no_worker(why: str, retry_after: float) -> ApiError:
    return ApiError(503, why, "service_unavailable", code="no_worker", retry_after=retry_after)


def model_not_found(model: str) -> ApiError:
    """`kvmesh.wire.model_not_found`'s 404 (the router's too), raised in the gateway."""
    return ApiError.from_reply(wire.model_not_found(model))
