"""The layer rules: which package of this tree may import which. Data only; checked over the
source tree by tests/unit/test_layers.py (every `import` and `from ... import`, at any depth,
`if TYPE_CHECKING:` included), so an arrow that points up fails a test, not a review.

A module's rule is the one of the longest key of `RULES` that is its name or a package above
it; that key is its unit. A module may import its own unit, and the entries of its rule: a
whole unit (`"kvmesh"`: any module of unit kvmesh, which does not include kvmesh.cli, a unit
of its own) or a single module of a unit (`"cache.client"`: that module only). Anything
outside the tree (the standard library, third-party packages) is not ruled here.

The house, bottom to top:

    kvmesh            wire contract, codec, actor base, config, block hashes, grammar specs,
                      the Redis pool of the actors that keep state in Redis
    inference.engine  the paged-KV engine, a library that knows nothing of the mesh
    telemetry         traces, metrics, logs (what is generic; services add their own)
    auth, cache       actors on Redis; cache also holds the gateway's cache client
    router, inference the router and the worker, both on the engine's tokenizer and types
    gateway           the OpenAI-compatible HTTP front door
    kvmesh.cli        the `kvmesh` command, `kvmesh up`, health checks: starts everything
"""

from __future__ import annotations

EVERYTHING = frozenset({"kvmesh", "inference.engine", "telemetry", "auth", "cache", "router",
                        "inference", "gateway"})

RULES: dict[str, frozenset[str]] = {
    # The ground floor every service stands on: it imports none of them, and no telemetry
    # (an actor is handed its trace propagation: kvmesh.actor.Propagation).
    "kvmesh": frozenset(),
    # The engine runs in its own process, and in tensor-parallel followers: it takes from
    # kvmesh only the block-hash chain it shares with the router and the grammar specs it
    # shares with the gateway, both leaves (see LEAVES), so it loads nothing of the mesh.
    "inference.engine": frozenset({"kvmesh.block_hash", "kvmesh.grammar"}),
    "telemetry": frozenset({"kvmesh"}),
    "auth": frozenset({"kvmesh", "telemetry"}),
    # cache/client.py is the gateway's side of the result cache; it lives beside the actor
    # whose protocol it speaks, and imports nothing of the gateway.
    "cache": frozenset({"kvmesh", "telemetry"}),
    # The router tokenises with the engine's own tokenizer and model store, so the ids it
    # counts prefix blocks by are the ones the worker's engine computes.
    "router": frozenset({"kvmesh", "telemetry", "inference.engine"}),
    # The worker: the engine's process protocol and its types (sampling params, outputs).
    "inference": frozenset({"kvmesh", "telemetry", "inference.engine"}),
    # The gateway may use two other services' code, both below it and free of their actors:
    # the result cache's client and key derivation (cache.client, cache.key), and the API key
    # format (auth.keys: stdlib only), so that a malformed key gets its 401 without a trip
    # to the auth actor.
    "gateway": frozenset({"kvmesh", "telemetry", "cache.client", "cache.key", "auth.keys"}),
    # The top floor: the CLI starts and checks every service.
    "kvmesh.cli": EVERYTHING,
}

# Modules that import nothing of this tree: what the engine takes from kvmesh must not pull
# the mesh (nats, msgspec, telemetry) into the engine's processes behind it.
LEAVES = frozenset({"kvmesh.block_hash", "kvmesh.grammar"})

# Imports that break a rule today, each with the change that removes it. The layer test
# fails when one of them is no longer in the tree: delete its line then.
KNOWN_BREAKS: dict[tuple[str, str], str] = {
}
