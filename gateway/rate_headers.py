"""`x-ratelimit-*` response headers, in OpenAI's names and formats, so a client can pace itself
before it meets a 429.

Contract:
- A request admitted under its tenant's `rpm` gets `x-ratelimit-limit-requests`,
  `x-ratelimit-remaining-requests` and `x-ratelimit-reset-requests`; under its `tpm`, the
  three `-tokens` ones. Remaining is what was left right after its admission (tokens after
  its reservation, the worst case that its settle later corrects: gateway/admission.py); reset
  is the time until the bucket is full again, as OpenAI writes it (`1s`, `6m0s`, `250ms`).
  A tenant without the limit, auth off, or an auth actor that admitted without limits
  (`fail_open`) gets none of them.
- They go on the response whatever it is (success, error after admission, a stream: set
  as its headers go out), and CORS exposes them (gateway/cors.py).
- A request that holds several admissions (a Responses turn and its store change) carries
  the last one's.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from aiohttp import web

from kvmesh.wire import AuthOk

NAMES = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
         "x-ratelimit-reset-requests", "x-ratelimit-limit-tokens",
         "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens")
_HEADERS = web.RequestKey("kvmesh.rate_headers", dict)
# The headers of the request whose handler runs in this context; a dict the request holds
# too, so they reach a response prepared after the handler returned.
_current: ContextVar[dict[str, str] | None] = ContextVar("kvmesh_rate_headers", default=None)


@web.middleware
async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    request[_HEADERS] = headers = {}
    token = _current.set(headers)
    try:
        return await handler(request)
    finally:
        _current.reset(token)


def note(ok: AuthOk, rpm: int, tpm: int) -> None:
    """The admission `ok` of a request limited by `rpm` and `tpm` (0: none) was answered."""
    headers = _current.get()
    if headers is None:
        return
    for unit, limit, left, reset in (("requests", rpm, ok.remaining_requests, ok.reset_requests),
                                     ("tokens", tpm, ok.remaining_tokens, ok.reset_tokens)):
        if limit and left >= 0:
            headers[f"x-ratelimit-limit-{unit}"] = str(limit)
            headers[f"x-ratelimit-remaining-{unit}"] = str(left)
            headers[f"x-ratelimit-reset-{unit}"] = duration(reset)


async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """aiohttp's `on_response_prepare`: the request's headers on its response."""
    response.headers.update(request.get(_HEADERS) or {})


def duration(seconds: float) -> str:
    """`seconds` as OpenAI (Go) writes a duration: `0s`, `250ms`, `1.5s`, `6m0s`, `1h0m0s`."""
    ms = max(0, round(seconds * 1000))
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs = f"{ms / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
