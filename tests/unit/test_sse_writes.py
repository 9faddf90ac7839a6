"""gateway/sse.py: a stream's headers go out with its first events and `[DONE]` with the end
of the body, so a one-event stream costs two writes to the socket, not four; what the client
reads is the same well-formed chunked SSE."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.sse import SseWriter


async def _serve(events: list[dict[str, Any]], writes: list[bytes]) -> web.Application:
    async def handler(request: web.Request) -> web.StreamResponse:
        transport = request.transport
        assert transport is not None
        write, writelines = transport.write, transport.writelines

        def count_write(data: bytes) -> None:
            writes.append(bytes(data))
            write(data)

        def count_writelines(parts: Any) -> None:
            parts = list(parts)
            writes.append(b"".join(parts))
            writelines(parts)

        transport.write, transport.writelines = count_write, count_writelines  # type: ignore
        sse = SseWriter(request)
        await sse.start()
        await sse.send(*events)
        await sse.done()
        return sse.response

    app = web.Application()
    app.router.add_get("/", handler)
    return app


async def test_headers_ride_with_the_first_events_and_done_with_the_end() -> None:
    writes: list[bytes] = []
    server = TestServer(await _serve([{"n": 1}, {"n": 2}], writes))
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session, session.get(server.make_url("/")) as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            body = await resp.read()
    finally:
        await server.close()
    assert body == b'data: {"n":1}\n\ndata: {"n":2}\n\ndata: [DONE]\n\n'
    assert len(writes) == 2, writes
    assert writes[0].startswith(b"HTTP/1.1 200") and b'data: {"n":1}' in writes[0]
    assert b"data: [DONE]" in writes[1] and writes[1].endswith(b"0\r\n\r\n")
