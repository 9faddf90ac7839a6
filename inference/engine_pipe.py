"""The worker's ends of its engine pipes, run by the worker's event loop itself, and the engine
process's end of the command pipe (`CommandReader`).

Contract:
- Frames are `multiprocessing.Connection`'s: a 4-byte big-endian signed length (or -1, then an
  8-byte length, for a frame over 2 GiB) and the pickled object, so the engine process sends
  with its plain blocking `Connection.send_bytes` (and the engine's ready message, or failure,
  is read with `recv`). Bodies are plain `pickle` (`dumps`),
  not `ForkingPickler`: the messages hold no pipes or sockets, and a ForkingPickler is built
  per call (~80 us a frame when the process has been idle, as at one stream).
- `CommandWriter.send(obj)` writes the frame at once from the loop thread (one `write` on a
  non-blocking pipe); what the pipe cannot take now (the engine is busy in a long step and its
  buffer is full) is buffered by the transport and written when the engine reads, in order.
  It never blocks the loop.
- `StepReader` is the read end's protocol: each whole frame is unpickled and handed to
  `on_frame` on the loop, in order, and keeps the loop polling (`busy_poll.touch`); a frame
  read half-way waits for its rest. `on_closed()` runs once when the engine's end closes (it
  exited, or crashed).
- `CommandReader.take(block)` is the engine's read end: every whole frame the pipe holds now,
  unpickled, in order, in one `read` (a frame written half-way is waited for); with `block`,
  it waits for the first. A wait reads in a loop for `busy_poll` seconds before it sleeps in
  `poll` (kvmesh/busy_poll.py). EOFError once the worker's end is closed and every frame was taken.
  Not `Connection.poll` and `recv`: between two steps they cost a selector, a poll and two
  reads per command (py-spy: 2.7 % of the engine process at 256 streams on the H200).
- Why on the loop and not in threads: a thread hand-off costs a wake-up and, more, waiting for
  the GIL while the loop runs (up to the switch interval); the loop's own `write` and `read`
  cost a system call each. Non-blocking applies to this process's ends only: each end of a pipe
  is its own open file, so the engine's ends stay blocking.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import select
import struct
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from kvmesh import busy_poll as polling

_SHORT = struct.Struct("!i")
_LONG = struct.Struct("!Q")


def dumps(obj: Any) -> bytes:
    """`obj` as a frame's body (what `Connection.send_bytes` takes and `recv` unpickles)."""
    return pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)


def frame(obj: Any) -> bytes:
    """`obj` as one `Connection` frame."""
    body = dumps(obj)
    if len(body) > 0x7FFFFFFF:
        return _SHORT.pack(-1) + _LONG.pack(len(body)) + body
    return _SHORT.pack(len(body)) + body


def take_fd(conn: Connection) -> int:
    """The file descriptor of `conn`, owned by the caller from now on (`conn` is closed)."""
    fd = os.dup(conn.fileno())
    conn.close()
    return fd


class CommandWriter:
    """The command pipe's write end on the loop (see the module contract)."""

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self._transport = transport

    @classmethod
    async def open(cls, conn: Connection) -> CommandWriter:
        loop = asyncio.get_running_loop()
        pipe = os.fdopen(take_fd(conn), "wb", buffering=0)
        transport, _ = await loop.connect_write_pipe(asyncio.Protocol, pipe)
        return cls(transport)

    def send(self, obj: Any) -> bool:
        """Queue `obj` for the engine; False when the pipe is already closed."""
        if self._transport.is_closing():
            return False
        self._transport.write(frame(obj))
        return True

    def close(self) -> None:
        """Close after what is buffered has been written."""
        self._transport.close()


class StepReader(asyncio.Protocol):
    """The step pipe's read end on the loop (see the module contract)."""

    def __init__(self, on_frame: Callable[[Any], None], on_closed: Callable[[], None]) -> None:
        self._on_frame = on_frame
        self._on_closed = on_closed
        self._buf = bytearray()
        self._closed = False
        self.transport: asyncio.BaseTransport | None = None

    @classmethod
    async def open(cls, conn: Connection, on_frame: Callable[[Any], None],
                   on_closed: Callable[[], None]) -> StepReader:
        loop = asyncio.get_running_loop()
        pipe = os.fdopen(take_fd(conn), "rb", buffering=0)
        _, reader = await loop.connect_read_pipe(lambda: cls(on_frame, on_closed), pipe)
        return reader

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's is no asyncio.ReadTransport subclass

    def data_received(self, data: bytes) -> None:
        """Hot path: once per read; a step usually arrives whole in one read."""
        polling.touch()
        buf = self._buf
        buf += data
        pos = 0
        while True:
            start, size = _whole(buf, pos)
            if start < 0:
                break
            with memoryview(buf) as view, view[start:start + size] as body:
                obj = pickle.loads(body)
            pos = start + size
            self._on_frame(obj)
        if pos:
            del buf[:pos]

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed:
            self._closed = True
            self._on_closed()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class CommandReader:
    """The command pipe's read end in the engine process (see the module contract)."""

    def __init__(self, conn: Connection, busy_poll: float = 0.0) -> None:
        self._conn = conn  # keeps the descriptor open
        self._busy_poll = busy_poll
        self._fd = conn.fileno()
        os.set_blocking(self._fd, False)  # this process's end only (the module contract)
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLIN)
        self._buf = bytearray()

    def take(self, block: bool) -> list[Any]:
        """Every whole command the pipe holds now (waiting for one with `block`), in order."""
        if not self._read() and block:
            self._wait()
        out = self._frames()
        while self._buf:  # part of a frame: the worker is writing the rest of it now
            self._wait()
            out += self._frames()
        return out

    def _wait(self) -> None:
        """Wait until the pipe holds more, and append it."""
        if self._busy_poll > 0 and polling.spin_until(time.monotonic() + self._busy_poll,
                                                      self._read):
            return
        while True:
            self._poll.poll()  # readable, or the worker's end closed
            if self._read():
                return

    def _read(self) -> bool:
        """Append what the pipe holds; False when it held nothing. EOFError once the worker's
        end is closed (a frame cut short by that is lost with the worker)."""
        try:
            data = os.read(self._fd, 1 << 20)
        except BlockingIOError:
            return False
        if not data:
            raise EOFError("the command pipe is closed")
        self._buf += data
        return True

    def _frames(self) -> list[Any]:
        """Every whole frame in the buffer, unpickled; what is left is part of one."""
        out, pos, buf = [], 0, self._buf
        while True:
            start, size = _whole(buf, pos)
            if start < 0:
                break
            with memoryview(buf) as view, view[start:start + size] as body:
                out.append(pickle.loads(body))
            pos = start + size
        del buf[:pos]
        return out


def _whole(buf: bytearray, pos: int) -> tuple[int, int]:
    """(where the body starts, its size) of the frame at `pos` if `buf` holds all of it, else
    (-1, 0)."""
    if len(buf) - pos < 4:
        return -1, 0
    (size,) = _SHORT.unpack_from(buf, pos)
    start = pos + 4
    if size == -1:
        if len(buf) - start < 8:
            return -1, 0
        (size,) = _LONG.unpack_from(buf, start)
        start += 8
    if len(buf) - start < size:
        return -1, 0
    return start, size
