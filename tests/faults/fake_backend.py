"""A scripted router + worker on a real nats-server, for fault tests that need a backend which
misbehaves on cue (or answers at once, for fuzzing the gateway without a model on the CPU).

It runs in its own thread and event loop, heartbeats as worker `fake` serving `FAKE_MODEL`, and
answers `kvmesh.router.generate` itself (accepting for worker `fake`). What it does with a request
depends on a marker in the prompt or the last message:

- `fake:silent`  accepts, then never sends a chunk (the gateway's chunk timeout must fire);
- `fake:no-accept`  never answers the router request (the gateway's router timeout must fire);
- `fake:flood`  accepts, then sends `FLOOD_CHUNKS` chunks of 8 KiB text as fast as it can;
- `fake:big`  accepts, then sends `BIG_CHUNKS` chunks of `BIG_TEXT` (together over NATS's
  1 MiB max payload, each well within it);
- `fake:huge-chunk`  accepts, then sends one chunk of `HUGE_TEXT`, just within the payload;
- `fake:slow`  accepts, then sends `SLOW_CHUNKS` one-token chunks `SLOW_PAUSE_S` apart;
- `fake:fail-mid`  accepts, sends one chunk, then fails the request (502 `worker_died`, as a
  worker whose engine died mid-answer does);
- anything else: accepts and sends two chunks, the last with `finish_reason` "stop" and usage.

An `EmbedRequest` is accepted and answered with one chunk per input, each carrying a vector of
`FAKE_DIMENSIONS` values (the last with usage).

Chunks travel as a real worker sends them: `Deltas` frames to the request's `reply_to`.
`/tokenize` and `/detokenize` are answered too: a prompt's token ids are its UTF-8 bytes.

Cancels are recorded in `cancelled`, so a test can see that a dropped client was cancelled.
"""

from __future__ import annotations

import asyncio
import struct
import threading
import time

import nats

from kvmesh import wire
from kvmesh.wire import (
    Accepted,
    Cancel,
    Chunk,
    Deltas,
    EmbedRequest,
    ErrorReply,
    GenerateRequest,
    Heartbeat,
    Ping,
    StreamError,
    UsageInfo,
)

FAKE_MODEL = "fake-model"
FAKE_WORKER = "fake"
FAKE_DIMENSIONS = 4
FLOOD_CHUNKS = 4000
FLOOD_TEXT = "x" * 8192
BIG_CHUNKS = 3
BIG_TEXT = "b" * (600 << 10)
HUGE_TEXT = "h" * ((1 << 20) - 4096)
SLOW_CHUNKS = 20
SLOW_PAUSE_S = 0.1


class FakeBackend:
    def __init__(self, nats_url: str) -> None:
        self.nats_url = nats_url
        self.cancelled: set[str] = set()
        self.flooding = 0  # floods still sending
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="fake-backend", daemon=True)

    def start(self) -> FakeBackend:
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("fake backend did not connect to nats")
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        nc = await nats.connect(self.nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        tasks: set[asyncio.Task[None]] = set()

        async def on_generate(msg) -> None:  # type: ignore[no-untyped-def]
            req = wire.decode(msg.data, GenerateRequest, EmbedRequest)
            if isinstance(req, EmbedRequest):
                await msg.respond(wire.encode(Accepted(req.request_id, FAKE_WORKER, 3)))
                await self._embeddings(nc, req)
                return
            text = req.prompt or (req.messages[-1].content if req.messages else "")
            if "fake:no-accept" in text:
                return
            await msg.respond(wire.encode(Accepted(req.request_id, FAKE_WORKER, 3)))
            if "fake:silent" in text:
                return
            if "fake:slow" in text:
                task = asyncio.create_task(self._slow(nc, req))
            elif "fake:fail-mid" in text:
                task = asyncio.create_task(self._fail_mid(nc, req))
            elif "fake:big" in text or "fake:huge-chunk" in text:
                texts = [BIG_TEXT] * BIG_CHUNKS if "fake:big" in text else [HUGE_TEXT]
                task = asyncio.create_task(self._texts(nc, req, texts))
            else:
                task = asyncio.create_task(self._answer(nc, req, "fake:flood" in text))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        async def on_cancel(msg) -> None:  # type: ignore[no-untyped-def]
            self.cancelled.add(wire.decode(msg.data, Cancel).request_id)

        async def on_ping(msg) -> None:  # type: ignore[no-untyped-def]
            await msg.respond(wire.encode(Ping()))

        await nc.subscribe(wire.ROUTER_GENERATE, queue="router", cb=on_generate)
        await nc.subscribe(wire.ROUTER_PING, queue="router", cb=on_ping)
        await nc.subscribe(wire.ROUTER_TOKENIZE, queue="router", cb=_on_tokenize)
        await nc.subscribe(wire.ROUTER_DETOKENIZE, queue="router", cb=_on_detokenize)
        await nc.subscribe(wire.CANCEL, cb=on_cancel)
        beat = asyncio.create_task(self._heartbeats(nc))
        self._ready.set()
        await self._stop.wait()
        beat.cancel()
        for task in list(tasks):  # answers still being sent (slow ones) end with the backend
            task.cancel()
        await asyncio.gather(beat, *tasks, return_exceptions=True)
        await nc.close()

    async def _heartbeats(self, nc: nats.NATS) -> None:
        while True:
            hb = Heartbeat(
                FAKE_WORKER, FAKE_MODEL, 0, 0, 0.0, 64, 64, max_model_len=1024, sent_at=time.time()
            )
            await nc.publish(wire.HEARTBEAT, wire.encode(hb))
            await asyncio.sleep(0.3)

    @staticmethod
    async def _send(nc: nats.NATS, req: GenerateRequest, chunk: Chunk) -> None:
        """One chunk, framed as a real worker frames it (a `Deltas` frame)."""
        await nc.publish(req.reply_to, wire.encode(Deltas(FAKE_WORKER, [chunk])))

    @staticmethod
    async def _embeddings(nc: nats.NATS, req: EmbedRequest) -> None:
        n = len(req.inputs or req.input_token_ids or [])
        vector = struct.pack(f"<{FAKE_DIMENSIONS}f", *([0.5] * FAKE_DIMENSIONS))
        chunks = [Chunk(req.request_id, i, i, "", [], embedding=vector,
                        usage=UsageInfo(n, 0) if i == n - 1 else None) for i in range(n)]
        await nc.publish(req.reply_to, wire.encode(Deltas(FAKE_WORKER, chunks)))

    async def _texts(self, nc: nats.NATS, req: GenerateRequest, texts: list[str]) -> None:
        for seq, text in enumerate(texts):
            last = seq == len(texts) - 1
            await self._send(nc, req, Chunk(
                req.request_id, seq, 0, text, [1], finish_reason="length" if last else None,
                usage=UsageInfo(3, len(texts)) if last else None))

    async def _slow(self, nc: nats.NATS, req: GenerateRequest) -> None:
        for seq in range(SLOW_CHUNKS):
            if req.request_id in self.cancelled:
                return
            last = seq == SLOW_CHUNKS - 1
            await self._send(nc, req, Chunk(
                req.request_id, seq, 0, "x", [1], finish_reason="length" if last else None,
                usage=UsageInfo(3, SLOW_CHUNKS) if last else None))
            await asyncio.sleep(SLOW_PAUSE_S)

    async def _fail_mid(self, nc: nats.NATS, req: GenerateRequest) -> None:
        await self._send(nc, req, Chunk(req.request_id, 0, 0, "Hel", [1]))
        error = ErrorReply(502, "bad_gateway", "the worker's engine stopped: fake",
                           code="worker_died")
        await nc.publish(req.reply_to, wire.encode(Deltas(
            FAKE_WORKER, errors=[StreamError(req.request_id, error)])))

    async def _answer(self, nc: nats.NATS, req: GenerateRequest, flood: bool) -> None:
        rid = req.request_id

        async def send(chunk: Chunk) -> None:
            await self._send(nc, req, chunk)

        if not flood:
            await send(Chunk(rid, 0, 0, "Hello", [1]))
            await send(Chunk(rid, 1, 0, "!", [2], finish_reason="stop", usage=UsageInfo(3, 2)))
            return
        self.flooding += 1
        try:
            for seq in range(FLOOD_CHUNKS):
                if rid in self.cancelled:
                    return
                last = seq == FLOOD_CHUNKS - 1
                await send(Chunk(rid, seq, 0, FLOOD_TEXT, [1],
                                 finish_reason="length" if last else None,
                                 usage=UsageInfo(3, FLOOD_CHUNKS) if last else None))
                if seq % 50 == 0:
                    await asyncio.sleep(0.005)  # let the loop breathe (and cancels in)
        finally:
            self.flooding -= 1


async def _on_tokenize(msg) -> None:  # type: ignore[no-untyped-def]
    req = wire.decode(msg.data, wire.TokenizeRequest)
    text = req.prompt if req.prompt is not None else "".join(m.content for m in req.messages or [])
    ids = list(text.encode())
    strs = [chr(i) for i in ids] if req.return_token_strs else None
    await msg.respond(wire.encode(wire.TokenizeReply(ids, 1024, strs)))


async def _on_detokenize(msg) -> None:  # type: ignore[no-untyped-def]
    req = wire.decode(msg.data, wire.DetokenizeRequest)
    if any(t > 255 for t in req.tokens):
        reply = wire.ErrorReply(400, "invalid_request_error", "tokens: outside [0, 256)",
                                "tokens")
        await msg.respond(wire.encode(reply))
        return
    await msg.respond(wire.encode(wire.DetokenizeReply(bytes(req.tokens).decode(errors="replace"))))
