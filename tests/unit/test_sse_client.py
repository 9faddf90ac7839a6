"""bench/sse_client.py against a real aiohttp server: a chunked SSE stream ends where its
terminating chunk arrives (not at an event that merely looks like one), a Content-Length reply
ends after its body, one keep-alive connection carries request after request, and a server
that drops the connection mid-body fails that request, the next one reconnecting."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from bench.sse_client import Stream


async def _sse(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    await resp.prepare(request)
    # The middle chunk ends as the body's last chunk does: "\r\n0\r\n" and the chunk's CRLF.
    for event in (b'data: {"text": "a"}\n\n', b"data: x\r\n0\r\n", b'data: {"text": "b"}\n\n'):
        await resp.write(event)
        await asyncio.sleep(0.01)
    await resp.write(b'data: {"usage":{"completion_tokens":3}}\n\ndata: [DONE]\n\n')
    await resp.write_eof()
    return resp


async def _refuse(request: web.Request) -> web.Response:
    return web.json_response({"error": "no"}, status=400)


async def _drop(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    await resp.prepare(request)
    await resp.write(b'data: {"text": "a"}\n\n')
    assert request.transport is not None
    request.transport.close()  # mid-body: no last chunk will come
    return resp


async def _serve(port: int) -> web.AppRunner:
    app = web.Application()
    app.router.add_post("/sse", _sse)
    app.router.add_post("/refuse", _refuse)
    app.router.add_post("/drop", _drop)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def test_a_dropped_connection_fails_its_request_and_the_next_reconnects(
        unused_tcp_port: int) -> None:
    runner = await _serve(unused_tcp_port)
    try:
        stream = Stream("127.0.0.1", unused_tcp_port)
        with pytest.raises(ConnectionError):
            await stream.post("/drop", {}, b"{}")
        reply = await stream.post("/sse", {}, b"{}")
        assert reply.status == 200 and b"data: [DONE]" in reply.tail
        stream.close()
    finally:
        await runner.cleanup()


async def test_stream_reads_sse_and_plain_replies_on_one_connection(unused_tcp_port: int) -> None:
    runner = await _serve(unused_tcp_port)
    try:
        stream = Stream("127.0.0.1", unused_tcp_port)
        for _ in range(2):
            reply = await stream.post("/sse", {"Authorization": "Bearer k"}, b"{}")
            assert reply.status == 200 and reply.first is not None
            assert b'"completion_tokens":3' in reply.tail and b"data: [DONE]" in reply.tail
            assert b'"text": "b"' in reply.tail
            bad = await stream.post("/refuse", {}, b"{}")
            assert bad.status == 400 and b'"error"' in bad.tail
        proto = stream._proto
        assert proto is not None and not proto.closed  # the same connection throughout
        stream.close()
    finally:
        await runner.cleanup()
