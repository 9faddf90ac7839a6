"""`kvmesh serve gateway`: the gateway, hosting a router in each of its processes when its
`colocate_router` setting says so.

Why: at one stream a request's first token crosses about ten process wake-ups (client,
gateway, nats-server, router, nats-server, worker, engine process, worker, nats-server,
gateway), 0.15-0.45 ms each on a GPU host (docs/BENCHMARKS.md, issue 12). A router in the
gateway's process takes two of them (nats-server and the router) off every request's way in,
as NVIDIA Dynamo's frontend keeps its tokenizer and KV router in the HTTP process. The hosted
router is a whole router actor: its own NATS connection and user, the workers' heartbeats and
KV events, and its queue group, so gateways elsewhere use it like any other router; its
process's own requests reach it by a call instead of a NATS request. Measured on an H200 it
saves 0.0-0.3 ms at one stream and costs far more under load (a route waits on the busy
gateway's loop several times), so it is off unless asked for (docs/ARCHITECTURE.md).

The gateway and router packages import nothing of each other (kvmesh/layers.py); this module,
above both, joins them. The hosted router reads its settings from the router's variables
(`KVMESH_ROUTER_*`, then `KVMESH_*`), never from the gateway's flags; its metrics are on the
gateway process's /metrics and its spans carry the gateway's service name.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from gateway.mesh_client import LocalRouter
from gateway.server import main as gateway_main
from kvmesh.config import RouterConfig, load
from router.service import RouterStartError, load_router

log = logging.getLogger("kvmesh.gateway")
COMMAND = ("-m", "kvmesh.cli.serve", "gateway")  # how `--processes N` starts each process


async def hosted_router() -> LocalRouter:
    """The router a gateway process hosts, its tokenizer loaded; exits the process (status 1,
    one log line) when the tokenizer does not load, as a router process would."""
    try:
        return await load_router(load(RouterConfig, []))
    except RouterStartError as exc:
        log.error("gateway: the hosted router's tokenizer did not load: %s", exc)
        raise SystemExit(1) from None


def main(argv: Sequence[str]) -> int:
    return gateway_main(argv, colocate=hosted_router, command=COMMAND)
