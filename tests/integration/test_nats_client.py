"""kvmesh's NATS client (kvmesh/nats_client.py) against a real nats-server: a direct callback
runs from the connection's reader, a publish is written at once, order holds when publishes
fall back to nats-py's queue, a failed write leaves its frame queued, a failing callback
is reported without losing the next message, and a message keeps the loop polling; the
actor's handlers wait as tasks and one past `MAX_WAITING` is refused."""

from __future__ import annotations

import asyncio

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from kvmesh import actor as actor_module
from kvmesh import busy_poll, nats_client, wire
from kvmesh.actor import Actor
from kvmesh.nats_client import FastClient
from kvmesh.wire import ErrorReply, Message, Ping


async def _connect(nats_url: str, **options: object) -> FastClient:
    assert nats_client.FAST, "the installed nats-py lacks the hooks kvmesh/nats_client.py uses"
    nc = FastClient()
    await nc.connect(nats_url, **options)
    return nc


async def _until(cond, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.005)


async def test_a_direct_callback_runs_from_the_reader(nats_url: str) -> None:
    nc = await _connect(nats_url)
    try:
        ran_in: dict[str, asyncio.Task[object] | None] = {}

        def recorder(name: str):  # type: ignore[no-untyped-def]
            async def cb(_msg: Msg) -> None:
                ran_in[name] = asyncio.current_task()
            return cb

        await nc.subscribe("t.direct", cb=recorder("direct"), direct=True)
        await nc.subscribe("t.queued", cb=recorder("queued"))
        await nc.publish("t.direct", b"1")
        await nc.publish("t.queued", b"2")
        await _until(lambda: len(ran_in) == 2)
        assert ran_in["direct"] is nc._reading_task
        assert ran_in["queued"] is not nc._reading_task  # nats-py's path: the sub's own task
    finally:
        await nc.close()


async def test_replies_to_requests_come_from_the_reader(nats_url: str) -> None:
    nc = await _connect(nats_url)
    try:
        async def echo(msg: Msg) -> None:
            await nc.publish(msg.reply, msg.data)

        await nc.subscribe("t.echo", cb=echo, direct=True)
        assert (await nc.request("t.echo", b"hi", timeout=5)).data == b"hi"
        assert nc._resp_sub_prefix is not None
        resp_sids = [sid for sid, sub in nc._subs.items()
                     if sub.subject.startswith(nc._resp_sub_prefix.decode())]
        assert resp_sids and set(resp_sids) <= nc._direct
    finally:
        await nc.close()


async def test_a_message_keeps_the_loop_polling(nats_url: str) -> None:
    """Each message read keeps the process's loop from sleeping for its window
    (kvmesh/busy_poll.py): the next hop's message finds it running; but a message of a
    subscription made with `polls=False` does not."""
    nc = await _connect(nats_url)
    busy_poll.install(0.2)
    try:
        got = asyncio.Event()

        async def cb(_msg: Msg) -> None:
            got.set()

        await nc.subscribe("t.poll", cb=cb, direct=True)
        beats = asyncio.Event()

        async def beat(_msg: Msg) -> None:
            beats.set()

        await nc.subscribe("t.beat", cb=beat, direct=True, polls=False)  # as heartbeats are
        assert busy_poll._process is not None and busy_poll._process.task is None
        await nc.publish("t.beat", b"0")
        await asyncio.wait_for(beats.wait(), 5)
        assert busy_poll._process.task is None  # an idle process's beats let it sleep
        await nc.publish("t.poll", b"1")
        await asyncio.wait_for(got.wait(), 5)
        task = busy_poll._process.task
        assert task is not None and not task.done()
        await asyncio.wait_for(task, 5)  # ends with its window
    finally:
        busy_poll.install(0.0)
        await nc.close()


async def test_a_publish_is_written_at_once(nats_url: str) -> None:
    nc, plain = await _connect(nats_url), await nats.connect(nats_url)
    try:
        await nc.publish("t.now", b"x" * 300)
        assert nc._pending_data_size == 0 and nc._pending == []  # on the socket already
        await plain.publish("t.now", b"x" * 300)
        assert plain._pending_data_size > 0  # nats-py: still queued for its flusher task
    finally:
        await nc.close()
        await plain.close()


async def test_order_holds_when_publishes_fall_back_to_the_queue(
        nats_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sender, receiver = await _connect(nats_url), await _connect(nats_url)
    try:
        got: list[int] = []

        async def cb(msg: Msg) -> None:
            got.append(int(msg.data))

        await receiver.subscribe("t.order", cb=cb, direct=True)
        await receiver.flush()
        queued = 0
        for i in range(3000):
            if i % 100 == 0:  # a full socket buffer every other hundred: nats-py's queue
                limit = 0 if (i // 100) % 2 else nats_client.WRITE_BUFFER_LIMIT
                monkeypatch.setattr(nats_client, "WRITE_BUFFER_LIMIT", limit)
            await sender.publish("t.order", str(i).encode())
            queued += sender._pending_data_size > 0
            if i % 7 == 0:
                await asyncio.sleep(0)  # let the flusher run now and then, mid-hundred
        await sender.flush()
        await _until(lambda: len(got) == 3000)
        assert got == list(range(3000))
        assert queued > 0  # the fallback was taken
    finally:
        await sender.close()
        await receiver.close()


async def test_a_failed_write_leaves_the_frame_to_nats_py(
        nats_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that raises (a connection closing before nats-py noticed) does not fail the
    publish: the frame stays queued and nats-py's flusher sends it."""
    sender, receiver = await _connect(nats_url), await _connect(nats_url)
    try:
        got: list[bytes] = []

        async def cb(msg: Msg) -> None:
            got.append(msg.data)

        await receiver.subscribe("t.retry", cb=cb, direct=True)
        await receiver.flush()
        transport = sender._transport
        real = transport.writelines
        failed: list[bool] = []

        def once(payload: list[bytes]) -> None:
            if not failed:
                failed.append(True)
                raise RuntimeError("unable to perform operation: the handler is closed")
            real(payload)

        monkeypatch.setattr(transport, "writelines", once)
        await sender.publish("t.retry", b"kept")
        assert failed and sender._pending_data_size > 0  # queued, not lost
        await _until(lambda: got == [b"kept"])
    finally:
        await sender.close()
        await receiver.close()


async def test_a_failing_direct_callback_is_reported_and_the_next_message_arrives(
        nats_url: str) -> None:
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    nc = await _connect(nats_url, error_cb=on_error)
    try:
        got: list[bytes] = []

        async def cb(msg: Msg) -> None:
            if msg.data == b"bad":
                raise ValueError("a handler bug")
            got.append(msg.data)

        await nc.subscribe("t.fail", cb=cb, direct=True)
        await nc.publish("t.fail", b"bad")
        await nc.publish("t.fail", b"good")
        await _until(lambda: got == [b"good"])
        assert [str(e) for e in errors] == ["a handler bug"]
    finally:
        await nc.close()


async def test_handlers_past_the_waiting_limit_are_refused(
        nats_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """One handler runs, two wait their turn as tasks, the fourth and fifth are refused with a
    503 (logged once, not per refusal); the three others are answered once the first handler
    returns."""
    monkeypatch.setattr(actor_module, "MAX_WAITING", 2)
    svc = Actor("probe", nats_url)
    await svc.connect()
    release = asyncio.Event()

    async def slow(_msg: Message, _raw: Msg) -> Message:
        await release.wait()
        return Ping()

    await svc.serve("t.slow", (Ping,), slow, max_concurrency=1)
    asker: Client = await nats.connect(nats_url)
    try:
        asks = [asyncio.ensure_future(asker.request("t.slow", wire.encode(Ping()), timeout=10))
                for _ in range(5)]
        await _until(lambda: sum(a.done() for a in asks) == 2)
        refused = [a for a in asks if a.done()]
        assert len(refused) == 2
        for ask in refused:
            err = wire.decode(ask.result().data, ErrorReply)
            assert err.status == 503 and err.code == "overloaded" and "overloaded" in err.message
        assert sum("wait for a handler" in r.getMessage() for r in caplog.records) == 1
        release.set()
        answers = await asyncio.gather(*(a for a in asks if a not in refused))
        assert all(isinstance(wire.decode(r.data), Ping) for r in answers)
    finally:
        await asker.close()
        assert svc.nc is not None
        await svc.nc.close()


def test_a_changed_nats_py_leaves_its_client_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    assert nats_client._has_hooks()

    async def renamed(self: Client, raw_headers: bytes) -> None: ...

    monkeypatch.setattr(Client, "_process_headers", renamed)
    assert not nats_client._has_hooks()
