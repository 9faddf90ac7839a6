"""Server-sent events framing, as OpenAI clients read it: `data: <json>\\n\\n`, then
`data: [DONE]\\n\\n`. Headers disable caching and proxy buffering so tokens reach the client
as they are made.

Hot path: events are encoded with orjson, and several events go out in one write. A write
that fits under the transport's buffer limit returns at once and arms no timer; only a client
that lets its buffer fill (it reads slower than we write) is waited for, at most
`write_timeout` seconds, then dropped (`ConnectionResetError`, logged, counted as 499).
The headers go out with the first events and `[DONE]` with the end of the body, so a
one-token stream is two writes (each a send and a wake-up of the client), not four. The
Responses stream frames each event with an `event:` line naming its type (`typed_event`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from aiohttp import web

log = logging.getLogger("kvmesh.gateway.sse")
BUFFER_LIMIT = 1 << 16  # aiohttp's transport high-water mark: a write past it waits to drain


def event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def typed_event(payload: dict[str, Any]) -> bytes:
    """An event as the Responses stream frames it: an `event:` line naming its type first."""
    return b"event: " + payload["type"].encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class _SseResponse(web.StreamResponse):
    # aiohttp sends a StreamResponse's headers at `prepare`, in a write of their own; with
    # web.Response's setting they wait for the first body write and go out in it. (Were the
    # name gone from aiohttp, the headers would go out first again, as before.)
    _send_headers_immediately = False


class SseWriter:
    def __init__(self, request: web.Request, write_timeout: float = 30.0) -> None:
        self.request = request
        self.write_timeout = write_timeout
        self.response = _SseResponse(status=200, headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        })

    async def start(self) -> None:
        """Begin the response; its headers go out with the first `send` (or `done`)."""
        await self.response.prepare(self.request)

    async def send(self, *payloads: dict[str, Any]) -> None:
        """Events, in one write. Raises ConnectionResetError when the client has gone."""
        if payloads:
            await self.write(b"".join(event(p) for p in payloads))

    async def done(self) -> None:
        """`[DONE]` and the end of the body, in one write."""
        self._transport()
        await self.response.write_eof(b"data: [DONE]\n\n")

    def _transport(self) -> asyncio.Transport:
        """The client's connection; ConnectionResetError when it has gone."""
        transport = self.request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        return transport

    async def write(self, data: bytes) -> None:
        transport = self._transport()
        if transport.get_write_buffer_size() + len(data) <= BUFFER_LIMIT:
            await self.response.write(data)  # below the mark: returns without waiting
            return
        try:
            await asyncio.wait_for(self.response.write(data), self.write_timeout)
        except TimeoutError:
            transport.abort()
            log.warning("client read nothing for %gs; stream dropped", self.write_timeout)
            raise ConnectionResetError(
                f"client read nothing for {self.write_timeout:g}s; stream dropped") from None
