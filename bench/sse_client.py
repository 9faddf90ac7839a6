"""A lean streaming HTTP/1.1 client for load generation: one keep-alive connection per stream,
the response read in the protocol's own callback, never parsed event by event.

Why not aiohttp: the benchmark's clients share the GPU host with the mesh they measure (a real
deployment's clients do not), and aiohttp's client costs ~25 µs of CPU per SSE event: about two
cores at 256 SmolLM2 streams on the H200, beside the engine's one core. This one keeps, per
response, the arrival time of its first body bytes and its last 2 KiB, which is all the
benchmark reads (TTFT, the usage event, `[DONE]`).

Contract: `Stream(host, port)` connects on its first `post`; `await stream.post(path, headers,
body)` sends one request and returns a `Reply` once the whole response has arrived: its
status, the time its first body bytes came (`time.time()`; None if it had no body) and the
body's last bytes. The body may be chunked (SSE) or have a Content-Length. A chunked body ends
at its last chunk, whatever the events hold, and its `tail` still holds the chunk-size lines
(the events inside each chunk are whole, as the gateway writes one event per chunk). A
connection the server closes fails the request in flight with ConnectionError; the next
`post` reconnects.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

TAIL = 2048


@dataclass
class Reply:
    status: int
    first: float | None
    tail: bytes


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reply: asyncio.Future[Reply] | None = None
        self.closed = False
        self._reset()

    def _reset(self) -> None:
        self._head = b""
        self._status = 0
        self._in_body = False
        self._chunked = False
        self._left = 0  # bytes still due: of a Content-Length body, or of a chunk and its CRLF
        self._line = b""  # a chunk-size line cut between two reads
        self._last_chunk = False  # the 0-size chunk came: only its final CRLF is due
        self._first: float | None = None
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.reply is not None and not self.reply.done():
            self.reply.set_exception(ConnectionError(f"connection closed: {exc}"))

    def data_received(self, data: bytes) -> None:
        if not self._in_body:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self._head[:end].lower(), self._head[end + 4:]
            self._status = int(head[9:12])
            self._chunked = b"transfer-encoding: chunked" in head
            at = head.find(b"content-length:")
            self._left = int(head[at + 15:].split(b"\r\n", 1)[0]) if at >= 0 else 0
            self._in_body = True
            if not data:
                if not self._chunked and not self._left:
                    self._done()
                return
        if self._first is None:
            self._first = time.time()
        self._tail = (self._tail + data)[-TAIL:]
        if not self._chunked:
            self._left -= len(data)
            if self._left <= 0:
                self._done()
        elif self._chunks_end(data):
            self._done()

    def _chunks_end(self, data: bytes) -> bool:
        """Walk `data` through the chunked framing (a step per chunk, so about one per event);
        True when the body's last CRLF has arrived."""
        at = 0
        while at < len(data):
            if self._left:
                took = min(self._left, len(data) - at)
                self._left -= took
                at += took
                continue
            cut = data.find(b"\r\n", at)
            if cut < 0:
                self._line += data[at:]
                return False
            line, self._line, at = self._line + data[at:cut], b"", cut + 2
            if self._last_chunk:
                return True  # the empty line after the last chunk (no trailers are sent)
            size = int(line.split(b";", 1)[0], 16)
            self._last_chunk = size == 0
            self._left = size + 2 if size else 0
        return False

    def _done(self) -> None:
        reply = Reply(self._status, self._first, self._tail)
        self._reset()
        if self.reply is not None and not self.reply.done():
            self.reply.set_result(reply)


class Stream:
    """One keep-alive connection; one request at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._proto: _Protocol | None = None

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(_Protocol, self.host, self.port)
        return proto

    async def post(self, path: str, headers: dict[str, str], body: bytes) -> Reply:
        if self._proto is None or self._proto.closed:
            self._proto = await self._connect()
        proto = self._proto
        lines = [f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                 "Content-Type: application/json", f"Content-Length: {len(body)}",
                 *(f"{k}: {v}" for k, v in headers.items())]
        proto.reply = asyncio.get_running_loop().create_future()
        assert proto.transport is not None
        proto.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        return await proto.reply

    def close(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
