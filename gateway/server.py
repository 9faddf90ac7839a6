"""Run the gateway: `kvmesh serve gateway` (or `python -m gateway.server`).

Contract:
- One gateway process joins the mesh (its NATS client and subscriptions), then starts the HTTP
  server with handler cancellation on, so a client that disconnects cancels its handler (and
  with it the request at the worker). When NATS does not answer within `JOIN_WAIT_S`, the
  server starts anyway: `/health` is 200, `/ready` and every generation 503 with Retry-After,
  until the gateway joins in the background.
  The listening socket is opened with SO_REUSEPORT: any number of gateway processes (this
  command run N times, or `--processes N`) share one port and the kernel spreads connections
  across them. Each has its own NATS connection and inbox, so they share nothing else.
- `--processes N` (N > 1; 0 = one per core) makes this process a small supervisor: it starts
  N gateway processes, restarts one that dies (at most once a second), and passes SIGTERM or
  SIGINT on to all of them.
- SIGTERM/SIGINT: stop accepting connections, let open requests finish within the grace
  period; a stream still open then ends with a 503 error event and `[DONE]` (never a cut
  connection); then exit.
- `colocate_router`: each gateway process hosts a router (gateway/mesh_client.py,
  `LocalRouter`), which `main`'s caller builds (`colocate`: kvmesh/cli/colocate.py, as
  `kvmesh serve gateway` does); without one the setting is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

from aiohttp import web

import telemetry
from gateway.app import build_app
from gateway.bad_requests_log import BadRequestLog
from gateway.errors import ApiError
from gateway.mesh_client import LocalRouter, MeshClient
from kvmesh import eventloop
from kvmesh.config import ConfigError, GatewayConfig, load
from telemetry import loop_lag
from telemetry.metrics import serve_metrics
from telemetry.redact import add_secret

log = logging.getLogger("kvmesh.gateway")
RESTART_AFTER_S = 1.0
# How long a starting gateway waits for NATS before it opens its port anyway. Joined first, a
# process that opens the shared port (SO_REUSEPORT) can serve what the kernel hands it.
JOIN_WAIT_S = 5.0
Colocate = Callable[[], Awaitable[LocalRouter]]  # builds the router a gateway process hosts


class ListenError(Exception):
    """The gateway could not open its port."""


async def serve(cfg: GatewayConfig, stop: asyncio.Event | None = None,
                local_router: LocalRouter | None = None) -> None:
    """Serve until `stop` is set or a SIGTERM/SIGINT arrives; route through `local_router`
    when given."""
    for secret in (cfg.admin_key, cfg.metrics_key):
        add_secret(secret)  # never in a log line
    mesh = MeshClient(cfg, local_router)
    runner = web.AppRunner(build_app(mesh), handler_cancellation=True, access_log=None,
                           logger=BadRequestLog(),  # an unparsable request is no ERROR
                           keepalive_timeout=cfg.header_timeout,  # idle or slow headers: closed
                           shutdown_timeout=mesh.grace_period)
    await runner.setup()  # the app's start-up hooks register their on_join subscriptions
    joining = await _join(mesh)
    # several gateway processes may share the port
    site = web.TCPSite(runner, cfg.host, cfg.port, reuse_port=True)
    try:
        await site.start()
    except OSError as exc:  # a host that does not resolve or is not ours, a port taken
        await _stop_joining(joining)
        raise ListenError(f"cannot listen on {cfg.host}:{cfg.port}: {exc}") from None
    log.info("gateway listening on http://%s:%d (pid %d)", cfg.host, cfg.port, os.getpid())
    if cfg.metrics:  # port 0: /metrics is on the API port
        serve_metrics(cfg.metrics_port, cfg.metrics_host)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await _stop_joining(joining)  # still waiting for NATS: stop waiting
    await site.stop()  # no new connections; open ones go on
    await _finish_streams(mesh, cfg.grace_period)
    await runner.cleanup()
    await mesh.drain()


async def _join(mesh: MeshClient) -> asyncio.Task[None]:
    """Start joining the mesh; return once joined or after `JOIN_WAIT_S`, whichever is first.
    Past the wait the port opens anyway and answers 503 until NATS does (the task goes on)."""
    joining = asyncio.ensure_future(mesh.start())
    done, _ = await asyncio.wait({joining}, timeout=JOIN_WAIT_S)
    if done:
        joining.result()  # a subscription that failed: the process exits with it
    else:
        log.warning("nats at %s does not answer: serving 503 until it does", mesh.nats_url)
        joining.add_done_callback(_log_join_failure)
    return joining


async def _stop_joining(joining: asyncio.Task[None]) -> None:
    """Cancel a join still waiting for NATS, again while it goes on: nats-py's connect loop
    retries on any Exception, and Python 3.11's `wait_for` can turn a cancel that comes as a
    connect attempt fails into that attempt's error, so one cancel may be lost (the process
    then hung at exit, its loop waiting for the join to end)."""
    for _ in range(50):
        if joining.done():
            return
        joining.cancel()
        await asyncio.wait({joining}, timeout=0.1)


def _log_join_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("gateway could not join the mesh", exc_info=task.exception())


async def _finish_streams(mesh: MeshClient, grace: float) -> None:
    """Wait for open requests; past `grace`, end each with a 503 its handler writes out."""
    deadline = time.monotonic() + grace
    while mesh.streams and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if not mesh.streams:
        return
    log.warning("ending %d open requests: the gateway is shutting down", len(mesh.streams))
    for stream in list(mesh.streams.values()):
        stream.fail(ApiError(503, "the gateway is shutting down", "service_unavailable",
                             code="gateway_shutdown", retry_after=mesh.cfg.retry_after))
    for _ in range(40):  # the handlers write their error events and [DONE]
        if not mesh.streams:
            break
        await asyncio.sleep(0.05)


def supervise(argv: Sequence[str], n: int, metrics_port: int,
              command: Sequence[str] = ("-m", "gateway.server")) -> int:
    """Run `n` single-process gateways (`python <command> <argv>`); restart any that dies
    until signalled. With a separate /metrics port, process i takes `metrics_port + i`."""
    cmd = [sys.executable, *command, *argv, "--processes", "1"]  # the last flag wins

    def start(i: int) -> subprocess.Popen[bytes]:
        port = ["--metrics-port", str(metrics_port + i)] if metrics_port else []
        return subprocess.Popen([*cmd, *port])

    children = [start(i) for i in range(n)]
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for c in children:
            with contextlib.suppress(ProcessLookupError):
                c.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    log.info("gateway supervisor: %d processes", n)
    while not stopping:
        time.sleep(RESTART_AFTER_S)
        for i, c in enumerate(children):
            if c.poll() is not None and not stopping:
                log.warning("gateway process %d exited (%s); restarting it", c.pid, c.returncode)
                children[i] = start(i)
    for c in children:
        c.wait()
    return 0


def main(argv: Sequence[str] | None = None, colocate: Colocate | None = None,
         command: Sequence[str] = ("-m", "gateway.server")) -> int:
    """Run the gateway (`command`: how its processes are started again, under
    `--processes`); `colocate` builds the router each process hosts with
    `colocate_router`."""
    args = list(sys.argv[1:] if argv is None else argv)
    cfg = load(GatewayConfig, args)
    if cfg.colocate_router and colocate is None:
        raise ConfigError("colocate_router: only `kvmesh serve gateway` can host a router")
    n = cfg.processes if cfg.processes > 0 else (os.cpu_count() or 1)
    telemetry.setup("gateway", f"gateway-{cfg.port}-{os.getpid()}", cfg.log_level)
    if n > 1:
        return supervise(args, n, cfg.metrics_port, command)

    async def run() -> None:
        local = await colocate() if cfg.colocate_router and colocate is not None else None
        await serve(replace(cfg, processes=1), local_router=local)

    try:
        eventloop.run(loop_lag.probed(run(), "gateway"), cfg.busy_poll)
    except ListenError as exc:  # one log line, not a traceback
        log.error("gateway: %s", exc)
        return 1
    finally:
        telemetry.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
