"""Where the operator's commands (`kvmesh keys`, `kvmesh top`) find a mesh by default.

`kvmesh up` gives its NATS and Redis fresh passwords each start and writes the operator's
URLs to `<state_dir>/nats-ops.url` and `<state_dir>/redis.url` (0600). A command run on the
same machine without `--nats-url`/`--redis-url` or their variables reads those files, so it
reaches `kvmesh up` as the docs show it; without them it falls back to the plain local URL.
"""

from __future__ import annotations

import os
from pathlib import Path

from kvmesh.config import DEFAULT_STATE_DIR


def local_url(env_name: str, state_file: str, fallback: str) -> str:
    """`$env_name` if set, else the URL `kvmesh up` wrote to `<state dir>/<state_file>` (the
    state dir from `KVMESH_UP_STATE_DIR` or `KVMESH_STATE_DIR`, else its default) if that
    file is there and readable, else `fallback`."""
    if value := os.environ.get(env_name):
        return value
    state = (os.environ.get("KVMESH_UP_STATE_DIR") or os.environ.get("KVMESH_STATE_DIR")
             or DEFAULT_STATE_DIR)
    try:
        written = (Path(state).expanduser() / state_file).read_text().strip()
    except OSError:
        return fallback
    return written or fallback


def nats_url() -> str:
    """The NATS URL an operator's command uses by default (kvmesh up's operator user)."""
    return local_url("KVMESH_NATS_URL", "nats-ops.url", "nats://127.0.0.1:4222")


def redis_url() -> str:
    """The Redis URL an operator's command uses by default (kvmesh up's, password included)."""
    return local_url("KVMESH_REDIS_URL", "redis.url", "redis://127.0.0.1:6379/0")


def http_url(host: str, port: int) -> str:
    """`http://host:port`, an IPv6 literal in brackets (`http://[::1]:8000`, RFC 3986)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
