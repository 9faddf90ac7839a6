"""Run the gateway: `kvmesh serve gateway` (or `python -m gateway.server`).

Starts the NATS client, then the HTTP server with handler cancellation on, so a client that
disconnects cancels its handler (and with it the request at the worker). SIGTERM/SIGINT stop
taking connections, let open requests finish within the grace period, and exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

import telemetry
from gateway.app import build_app
from gateway.mesh_client import MeshClient
from kvmesh.config import GatewayConfig, load
from telemetry.metrics import serve_metrics
from telemetry.redact import add_secret

log = logging.getLogger("kvmesh.gateway")


async def serve(cfg: GatewayConfig, stop: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set or a SIGTERM/SIGINT arrives."""
    for secret in (cfg.admin_key, cfg.metrics_key):
        add_secret(secret)  # never in a log line
    mesh = MeshClient(cfg)
    await mesh.start()
    runner = web.AppRunner(build_app(mesh), handler_cancellation=True, access_log=None,
                           keepalive_timeout=cfg.header_timeout)  # idle or slow headers: closed
    await runner.setup()
    site = web.TCPSite(runner, cfg.host, cfg.port, shutdown_timeout=mesh.grace_period,
                       reuse_port=True)  # several gateway processes may share the port
    await site.start()
    log.info("gateway listening on http://%s:%d", cfg.host, cfg.port)
    serve_metrics(cfg.metrics_port, cfg.metrics_host)  # port 0: /metrics is on the API port
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    await mesh.drain()


def main(argv: Sequence[str] | None = None) -> int:
    cfg = load(GatewayConfig, sys.argv[1:] if argv is None else argv)
    telemetry.setup("gateway", f"gateway-{cfg.port}-{os.getpid()}", cfg.log_level)
    try:
        asyncio.run(serve(cfg))
    finally:
        telemetry.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
