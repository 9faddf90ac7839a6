"""What every kvmesh service shares: typed config, the wire contract, the actor base, the CLI.

Importing this package must stay cheap and free of the service stack (nats, redis): the engine
imports `kvmesh.block_hash` on machines that have neither.
"""

__version__ = "0.1.0"
