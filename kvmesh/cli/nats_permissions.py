"""NATS users and subject permissions for a deployment, derived from the wire contract.

`python -m kvmesh.cli.nats_permissions > deploy/nats.conf` writes the nats-server config that
compose.yaml mounts: JetStream on, the HTTP monitor (for /healthz), and one user per service
whose publish and subscribe permissions name exactly the subjects of `kvmesh.wire` that the
service uses. So the gateway cannot publish to a worker's generate subject, a worker cannot
publish to the router, and nothing but the auth actor announces revocations.

Contract:
- `ROLES` is the one table of who publishes and who subscribes what; every subject in it is a
  constant (or subject function) of `kvmesh.wire`, and every subject of `kvmesh.wire` appears
  in it, published by someone and subscribed by someone (tests/unit/test_compose_static.py
  checks both, and checks the table against the services' source).
- Replies: a service that answers requests has `allow_responses` (it may publish to the reply
  subject of a message it received, once). A service that makes requests subscribes to
  `_INBOX.>`; a worker also publishes there, because its chunks go to the `reply_to` inbox
  the gateway put in the request. So do router, auth and cache: `allow_responses` knows only
  the requests the running nats-server delivered, so a restarted one refuses the reply to a
  request received before it (a result-cache lookup that waits on its leader, a route, an
  admission that waits for a slot), and its caller would wait out its timeout. Each of them
  is already trusted with the answers it gives; the gateway, the exposed one, is not given
  the right (its replies, background cancels, are short).
- Passwords are never in the file: each is the environment variable
  `KVMESH_NATS_<ROLE>_PASSWORD` of the nats-server process (nats-server reads `$NAME` from the
  environment). Services connect as `nats://<role>:<password>@nats:4222`.
- The output is deterministic, so a test can compare it with the committed deploy/nats.conf.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from kvmesh import wire

INBOX = "_INBOX.>"  # nats-py's request inboxes (and the gateway's chunk inboxes)
ANY_WORKER = "*"  # a worker id in worker_generate / worker_stats


@dataclass(frozen=True)
class Role:
    """One NATS user: the subjects it may publish and subscribe to."""

    name: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    allow_responses: bool = False
    doc: str = ""

    @property
    def password_var(self) -> str:
        return f"KVMESH_NATS_{self.name.upper()}_PASSWORD"


ROLES: tuple[Role, ...] = (
    Role("gateway", doc="OpenAI edge: asks auth, cache and the router; hears heartbeats "
         "(workers' and gateways'), beats itself; cancels background responses at the "
         "gateway running them",
         publish=(wire.ROUTER_GENERATE, wire.ROUTER_PING, wire.ROUTER_TOKENIZE,
                  wire.ROUTER_DETOKENIZE, wire.CANCEL, wire.GATEWAY_HEARTBEAT, wire.AUTH_VERIFY,
                  wire.AUTH_ADMIT, wire.AUTH_SETTLE, wire.AUTH_RENEW, wire.AUTH_ADMIN,
                  wire.CACHE_GET, wire.CACHE_PUT,
                  wire.RESPONSES_PUT, wire.RESPONSES_GET, wire.RESPONSES_DELETE,
                  wire.RESPONSES_PURGE, wire.RESPONSES_CANCEL, wire.RESPONSES_EVENTS_PUT,
                  wire.RESPONSES_EVENTS_GET,
                  wire.CONVERSATIONS_CREATE, wire.CONVERSATIONS_GET,
                  wire.CONVERSATIONS_UPDATE, wire.CONVERSATIONS_DELETE, wire.CONVERSATIONS_PURGE,
                  wire.CONVERSATIONS_ITEMS_ADD, wire.CONVERSATIONS_ITEMS_LIST,
                  wire.CONVERSATIONS_ITEM_GET, wire.CONVERSATIONS_ITEM_DELETE),
         subscribe=(wire.HEARTBEAT, wire.GATEWAY_HEARTBEAT, wire.AUTH_REVOKED,
                    wire.RESPONSES_CANCEL, wire.RESPONSES_EVENTS_ADDED, INBOX),
         allow_responses=True),
    Role("router", doc="routes to workers, cancels at one too slow to accept; hears "
         "heartbeats and KV events",
         publish=(wire.worker_generate(ANY_WORKER), wire.KV_RESYNC, wire.CANCEL, INBOX),
         subscribe=(wire.ROUTER_GENERATE, wire.ROUTER_PING, wire.ROUTER_TOKENIZE,
                    wire.ROUTER_DETOKENIZE, wire.HEARTBEAT, wire.KV_EVENTS, INBOX),
         allow_responses=True),
    Role("worker", doc="inference: streams chunks to the gateway's inbox",
         publish=(wire.HEARTBEAT, wire.KV_EVENTS, INBOX),
         subscribe=(wire.worker_generate(ANY_WORKER), wire.worker_stats(ANY_WORKER),
                    wire.CANCEL, wire.KV_RESYNC, wire.GATEWAY_HEARTBEAT),
         allow_responses=True),
    Role("auth", doc="keys, tenants, rate limits; announces revocations",
         publish=(wire.AUTH_REVOKED, INBOX),
         subscribe=(wire.AUTH_VERIFY, wire.AUTH_ADMIT, wire.AUTH_SETTLE, wire.AUTH_RENEW,
                    wire.AUTH_ADMIN),
         allow_responses=True),
    Role("cache", doc="result cache, the /v1/responses and /v1/conversations stores; tells "
         "resumed streams of new events",
         publish=(wire.RESPONSES_EVENTS_ADDED, INBOX),
         subscribe=(wire.CACHE_GET, wire.CACHE_PUT, wire.CACHE_STATS,
                    wire.RESPONSES_PUT, wire.RESPONSES_GET, wire.RESPONSES_DELETE,
                    wire.RESPONSES_PURGE, wire.RESPONSES_EVENTS_PUT, wire.RESPONSES_EVENTS_GET,
                    wire.CONVERSATIONS_CREATE, wire.CONVERSATIONS_GET,
                    wire.CONVERSATIONS_UPDATE, wire.CONVERSATIONS_DELETE, wire.CONVERSATIONS_PURGE,
                    wire.CONVERSATIONS_ITEMS_ADD, wire.CONVERSATIONS_ITEMS_LIST,
                    wire.CONVERSATIONS_ITEM_GET, wire.CONVERSATIONS_ITEM_DELETE),
         allow_responses=True),
    Role("ops", doc="operators and monitoring: pings, stats, revocations; no request path",
         publish=(wire.ROUTER_PING, wire.CACHE_STATS, wire.worker_stats(ANY_WORKER),
                  wire.AUTH_REVOKED),
         subscribe=(wire.HEARTBEAT, wire.KV_EVENTS, INBOX)),
)


def wire_subjects() -> set[str]:
    """Every subject the wire contract defines, worker subjects with `*` for the id."""
    found = {v for k, v in vars(wire).items()
             if k.isupper() and isinstance(v, str) and v.startswith("kvmesh.")}
    return found | {wire.worker_generate(ANY_WORKER), wire.worker_stats(ANY_WORKER)}


def render(port: int = 4222, http_port: int | None = 8222, store_dir: str | None = "/data",
           host: str = "0.0.0.0", max_payload: int = 1 << 20) -> str:
    """The nats-server config file for `ROLES` (`http_port` / `store_dir` None: no monitor,
    no JetStream, as `kvmesh up` runs it)."""
    lines = [
        "# Generated by `python -m kvmesh.cli.nats_permissions` from kvmesh/wire/: do not edit.",
        "# Passwords come from the environment of nats-server (KVMESH_NATS_<ROLE>_PASSWORD).",
        f"host: {host}",
        f"port: {port}",
        *([f"http_port: {http_port}"] if http_port is not None else []),
        f"max_payload: {max_payload}",
        *(["jetstream {", f'  store_dir: "{store_dir}"', "}"] if store_dir is not None else []),
        "authorization {",
        "  users = [",
    ]
    for role in ROLES:
        lines.append(f"    # {role.name}: {role.doc}")
        lines.append(f"    {{user: {role.name}, password: ${role.password_var}, permissions: {{")
        lines.append(f"      publish: {{allow: {_list(role.publish)}}}")
        lines.append(f"      subscribe: {{allow: {_list(role.subscribe)}}}")
        if role.allow_responses:
            lines.append("      allow_responses: true")
        lines.append("    }}")
    lines += ["  ]", "}", ""]
    return "\n".join(lines)


def role_url(role: str, password: str, host: str, port: int) -> str:
    """How a service of `role` connects: `nats://<role>:<password>@host:port`."""
    return f"nats://{role}:{quote(password, safe='')}@{host}:{port}"


def _list(subjects: Sequence[str]) -> str:
    # nats-server needs an allow list to be non-empty to mean "only these": an empty one
    # would allow everything, so a role that publishes nothing gets a subject nobody uses.
    items = subjects or ("_kvmesh.nothing",)
    return "[" + ", ".join(f'"{s}"' for s in items) + "]"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kvmesh.cli.nats_permissions",
                                     description="print the nats-server config for compose")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=4222)
    parser.add_argument("--http-port", type=int, default=8222)
    parser.add_argument("--store-dir", default="/data")
    args = parser.parse_args(argv)
    sys.stdout.write(render(args.port, args.http_port, args.store_dir, args.host))
    return 0


if __name__ == "__main__":
    sys.exit(main())
