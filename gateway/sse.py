"""Server-sent events framing, as OpenAI clients read it: `data: <json>\\n\\n`, then
`data: [DONE]\\n\\n`. Headers disable caching and proxy buffering so tokens reach the client
as they are made."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web


class SseWriter:
    def __init__(self, request: web.Request, write_timeout: float = 30.0) -> None:
        self.request = request
        self.write_timeout = write_timeout
        self.response = web.StreamResponse(status=200, headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        })

    async def start(self) -> None:
        await self.response.prepare(self.request)

    async def send(self, payload: dict[str, Any]) -> None:
        """One event. Raises ConnectionResetError when the client has gone."""
        data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        await self._write(b"data: " + data.encode() + b"\n\n")

    async def done(self) -> None:
        await self._write(b"data: [DONE]\n\n")
        await self.response.write_eof()

    async def _write(self, data: bytes) -> None:
        try:
            await asyncio.wait_for(self.response.write(data), self.write_timeout)
        except TimeoutError:
            transport = self.request.transport
            if transport is not None:
                transport.abort()
            raise ConnectionResetError(
                f"client read nothing for {self.write_timeout:g}s; stream dropped") from None
