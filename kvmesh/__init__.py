"""The ground floor every service stands on: the wire contract (`wire/`), the actor base, typed
config, the worker registry, block hashes and grammar specs. `cli/` is the top floor (the
`kvmesh` command and launcher) and the only part that imports the services.

Importing this package stays cheap and free of the service stack: the engine's processes import
`kvmesh.block_hash` and `kvmesh.grammar` through it. The layer rules, checked by
tests/unit/test_layers.py, are data in `layers.py`.
"""

__version__ = "0.1.0"
