"""`kvmesh top`: a live view of a running mesh in the terminal (telemetry/mesh_view.py says
what it shows). Plain ANSI output, no curses: works in any terminal and over SSH.

Contract:
- Subscribes to worker heartbeats on NATS (`--nats-url`; in compose, the `ops` user may) and
  scrapes `/metrics` endpoints: those given with `--metrics`, else `kvmesh up`'s layout on
  `--host` (the gateway's port and the `--metrics-ports` range, which each endpoint names
  through `kvmesh_service_info`). NATS down or an endpoint down shows in the view; it is
  not an error.
- Redraws every `--interval` seconds (default 1) on the terminal's alternate screen; `q` (or
  Ctrl-C) exits with status 0 and restores the terminal. With stdin not a terminal, or with
  `--once` (one frame after two scrapes, so rates are filled), it prints plain frames.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
import termios
import time
import tty
from collections.abc import Iterator
from typing import Any

from kvmesh import wire
from kvmesh.wire import Heartbeat
from telemetry.mesh_view import Endpoint, MeshView, local_endpoints

ALT_SCREEN, MAIN_SCREEN = "\x1b[?1049h\x1b[?25l", "\x1b[?25h\x1b[?1049l"
HOME_CLEAR = "\x1b[H\x1b[2J"


def endpoints(args: argparse.Namespace) -> list[Endpoint]:
    if args.metrics:
        return [Endpoint(u) for u in args.metrics]
    first, _, last = args.metrics_ports.partition("-")
    return local_endpoints(args.host, args.port, int(first), int(last or first))


async def watch_heartbeats(view: MeshView, url: str, clients: list[Any]) -> None:
    """Feed `view` from the heartbeat subject, connecting (and reconnecting) for as long as it
    runs; the client goes into `clients` so the caller can close it."""
    import nats

    async def on_beat(msg: Any) -> None:
        with contextlib.suppress(wire.WireError):
            view.beat(wire.decode(msg.data, Heartbeat), time.monotonic())

    async def on_error(exc: Exception) -> None:  # shown in the view, not printed over it
        view.nats = f"unreachable ({type(exc).__name__}), retrying"

    async def on_disconnect() -> None:
        view.nats = "disconnected, retrying"

    async def on_reconnect() -> None:
        view.nats = f"connected ({where})"

    where = url.rsplit("@", 1)[-1]  # never show a password
    nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=-1,
                            reconnect_time_wait=1, error_cb=on_error,
                            disconnected_cb=on_disconnect, reconnected_cb=on_reconnect)
    clients.append(nc)
    await nc.subscribe(wire.HEARTBEAT, cb=on_beat)
    await on_reconnect()


@contextlib.contextmanager
def screen(interactive: bool) -> Iterator[None]:
    """cbreak input and the alternate screen for the block; both restored on any exit."""
    if not interactive:
        yield
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    sys.stdout.write(ALT_SCREEN)
    try:
        yield
    finally:
        sys.stdout.write(MAIN_SCREEN)
        sys.stdout.flush()
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def run(args: argparse.Namespace) -> int:
    view = MeshView(endpoints(args))
    clients: list[Any] = []
    beats = asyncio.create_task(watch_heartbeats(view, args.nats_url, clients))
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    interactive = sys.stdin.isatty() and sys.stdout.isatty() and not args.once
    with contextlib.suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGINT, stop.set)
    try:
        with screen(interactive):
            if interactive:
                loop.add_reader(sys.stdin.fileno(), _on_key, stop)
            await asyncio.to_thread(view.scrape)
            while not stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), args.interval)
                await asyncio.to_thread(view.scrape)
                _draw(view, interactive)
                if args.once:
                    break
    finally:
        if interactive:
            loop.remove_reader(sys.stdin.fileno())
        beats.cancel()
        for nc in clients:
            with contextlib.suppress(Exception):  # closing is best effort on the way out
                await nc.close()
    return 0


def _on_key(stop: asyncio.Event) -> None:
    data = os.read(sys.stdin.fileno(), 64)
    if not data or b"q" in data.lower():
        stop.set()


def _draw(view: MeshView, interactive: bool) -> None:
    width = shutil.get_terminal_size((100, 40)).columns
    frame = view.render(time.monotonic(), width)
    if interactive:
        sys.stdout.write(HOME_CLEAR + "\r\n".join(frame))
    else:
        sys.stdout.write("\n".join(frame) + "\n\n")
    sys.stdout.flush()
