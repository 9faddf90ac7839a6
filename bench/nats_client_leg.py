"""What nats-py adds to one request through nats-server, against a bare protocol client.

    python bench/nats_client_leg.py [--rounds 2] [--poll none,both]

Issue 12's 1-stream TTFT target (the engine's + 3 ms) is met on some hosts and missed on others
by tenths of a millisecond, and three of the first token's hops are NATS legs. This bench asks
how much of a leg is the client library: a requester sends a 300-byte request to a responder in
another process and waits for the answer (two legs through a local `nats-server`), back to back
(2,000 requests) and with a 4 or 50 ms sleep before each (60 requests: every process idle in
between, as at one stream; 4 ms is about one stream's pause between a request's end and the
next). Both sides are nats-py (a subscription callback, the handler in a task), kvmesh's client
on nats-py (kvmesh/nats_client.py: the callback from the reader, publishes written at once; the
mesh's services run it), or a bare asyncio protocol that parses `MSG` lines in `data_received`
and writes `PUB` straight to the socket (no reconnects, no headers: not a client to ship, only
the floor a leaner one could reach). `--poll`: for each of these, the runs where neither process,
the responder, the requester or both keep their loop polling for the whole run
(kvmesh/busy_poll.py's polling, without its window). Medians and P90s in µs.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nats.aio.client import Client
from nats.aio.msg import Msg

from kvmesh.busy_poll import BusyPoll
from kvmesh.cli import procs
from kvmesh.nats_client import NatsClient

OnMsg = Callable[[bytes, bytes | None, bytes], None]
POLLS = {"none": (), "responder": ("responder",), "requester": ("requester",),
         "both": ("responder", "requester")}


def poll_if(polls: tuple[str, ...], role: str) -> BusyPoll | None:
    """A poll that keeps this process's loop from sleeping for the rest of the run, when
    `role` is among `polls` (kept by the caller: the loop holds its task weakly)."""
    if role not in polls:
        return None
    poll = BusyPoll(float("inf"))
    poll.touch()
    return poll


class BareNats(asyncio.Protocol):
    """Just enough of the NATS protocol for one subject each way."""

    def __init__(self, on_msg: OnMsg):
        self.buf = bytearray()
        self.on_msg = on_msg
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n")) >= 0:
            line = bytes(self.buf[:end])
            if not line.startswith(b"MSG "):
                del self.buf[:end + 2]
                if line == b"PING":
                    self.pub_raw(b"PONG\r\n")
                continue
            parts = line.split()  # MSG subject sid [reply] size
            size = int(parts[-1])
            if len(self.buf) < end + 2 + size + 2:
                return
            payload = bytes(self.buf[end + 2:end + 2 + size])
            del self.buf[:end + 2 + size + 2]
            self.on_msg(parts[1], parts[3] if len(parts) == 5 else None, payload)

    def pub_raw(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def pub(self, subject: bytes, payload: bytes, reply: bytes | None = None) -> None:
        head = subject + (b" " + reply if reply else b"")
        self.pub_raw(b"PUB %s %d\r\n%s\r\n" % (head, len(payload), payload))


async def bare_connect(port: int, on_msg: OnMsg) -> BareNats:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: BareNats(on_msg), "127.0.0.1", port)
    await asyncio.sleep(0.05)  # CONNECT and PING answered
    return proto


def bare_responder(port: int, polls: tuple[str, ...]) -> None:
    async def main() -> None:
        poll = poll_if(polls, "responder")  # noqa: F841 - held for the run
        proto: BareNats | None = None

        def on_msg(_subject: bytes, reply: bytes | None, payload: bytes) -> None:
            async def handle() -> None:  # in a task, as an actor runs its handlers
                assert proto is not None and reply is not None
                proto.pub(reply, payload)
            asyncio.get_running_loop().create_task(handle())

        proto = await bare_connect(port, on_msg)
        proto.pub_raw(b"SUB svc q 1\r\n")
        await asyncio.Event().wait()
    asyncio.run(main())


async def _connect(port: int, kind: str) -> Client:
    nc = NatsClient() if kind == "kvmesh" else Client()
    await nc.connect(f"nats://127.0.0.1:{port}")
    return nc


def natspy_responder(port: int, kind: str, polls: tuple[str, ...]) -> None:
    async def main() -> None:
        poll = poll_if(polls, "responder")  # noqa: F841 - held for the run
        nc = await _connect(port, kind)

        async def on_msg(msg: Msg) -> None:
            async def handle() -> None:
                await nc.publish(msg.reply, msg.data)
            asyncio.get_running_loop().create_task(handle())

        extra = {"direct": True} if kind == "kvmesh" else {}
        await nc.subscribe("svc", queue="q", cb=on_msg, **extra)
        await asyncio.Event().wait()
    asyncio.run(main())


async def bare_requests(port: int, n: int, gap: float, polls: tuple[str, ...]) -> list[int]:
    poll = poll_if(polls, "requester")  # noqa: F841 - held for the run
    waiter: list[asyncio.Future[int]] = []

    def on_msg(_subject: bytes, _reply: bytes | None, _payload: bytes) -> None:
        waiter[0].set_result(time.perf_counter_ns())

    proto = await bare_connect(port, on_msg)
    proto.pub_raw(b"SUB _INBOX.bench 2\r\n")
    await asyncio.sleep(0.1)
    out = []
    for _ in range(n):
        await asyncio.sleep(gap)
        waiter[:] = [asyncio.get_running_loop().create_future()]
        sent = time.perf_counter_ns()
        proto.pub(b"svc", b"x" * 300, b"_INBOX.bench")
        out.append(await waiter[0] - sent)
    return out


async def natspy_requests(port: int, n: int, gap: float, kind: str,
                          polls: tuple[str, ...]) -> list[int]:
    poll = poll_if(polls, "requester")  # noqa: F841 - held for the run
    nc = await _connect(port, kind)
    out = []
    for _ in range(n):
        await asyncio.sleep(gap)
        sent = time.perf_counter_ns()
        await nc.request("svc", b"x" * 300, timeout=2)
        out.append(time.perf_counter_ns() - sent)
    await nc.close()
    return out


def measure(kind: str, port: int, gap: float, polls: tuple[str, ...]) -> tuple[float, float]:
    bare = kind == "bare"
    responder = mp.Process(target=bare_responder if bare else natspy_responder,
                           args=(port, polls) if bare else (port, kind, polls), daemon=True)
    responder.start()
    time.sleep(1.0)
    n = 60 if gap else 2000
    times = asyncio.run(bare_requests(port, n, gap, polls) if bare else
                        natspy_requests(port, n, gap, kind, polls))[5:]
    responder.kill()
    responder.join()
    return statistics.median(times) / 1e3, sorted(times)[int(len(times) * 0.9)] / 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--poll", default="none", help=f"comma-separated, of {', '.join(POLLS)}")
    args = ap.parse_args()
    polls = args.poll.split(",")
    if unknown := set(polls) - set(POLLS):
        ap.error(f"--poll: not one of {', '.join(POLLS)}: {', '.join(sorted(unknown))}")
    port = procs.free_port()
    server = subprocess.Popen([procs.nats_server_binary(), "-a", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        procs.wait_port(port, 10, server)
        print("| client | who polls | round | gap | median µs | P90 µs |\n"
              "|---|---|---|---|---|---|")
        for r in range(args.rounds):
            for kind in ("nats-py", "kvmesh", "bare"):
                for poll in polls:
                    for gap in (0.0, 0.004, 0.05):
                        med, p90 = measure(kind, port, gap, POLLS[poll])
                        print(f"| {kind} | {poll} | {r + 1} | {gap * 1e3:.0f} ms | {med:.0f} | "
                              f"{p90:.0f} |", flush=True)
    finally:
        server.kill()


if __name__ == "__main__":
    main()
