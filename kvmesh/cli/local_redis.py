"""`kvmesh up`'s Redis requires a password, as compose's does (`KVMESH_REDIS_PASSWORD`).

`prepare(state_dir, port)` makes a fresh random password and writes `<state_dir>/redis.conf`
(127.0.0.1:`port`, `requirepass`, an append-only file in `<state_dir>/redis-data`, emptied at
each start) and `<state_dir>/redis.url`,
the URL every service and the operator (`kvmesh keys --redis-url`) connect with, both readable
by the owner only. redis-server reads the password from that file, never from its command line,
which `ps` shows to every local user. Passwords exist only in those files and in the children's
environments; log lines redact them (telemetry/redact.py hides a URL's password).

The append-only file (fsync every second) is what lets `kvmesh up` restart a Redis that died
without losing the run's keys, tenants and stored responses: without it the restarted Redis
was empty and every key, the banner's included, was 401 until the mesh was started again. A
new run starts empty, as its password is new.
"""

from __future__ import annotations

import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from kvmesh.cli.local_nats import HOST, private_file


@dataclass(frozen=True)
class LocalRedis:
    port: int
    config: Path
    password: str

    def url(self) -> str:
        """`redis://:<password>@127.0.0.1:<port>/0`, the password URL-quoted."""
        return f"redis://:{quote(self.password, safe='')}@{HOST}:{self.port}/0"


def prepare(state: Path, port: int, password: str | None = None) -> LocalRedis:
    """Write the config and the URL file for a Redis on `port` with `password` (default: a
    fresh random one); the server's working directory is `state`."""
    redis = LocalRedis(port, state / "redis.conf", password or secrets.token_hex(24))
    data = state / "redis-data"
    shutil.rmtree(data, ignore_errors=True)  # the last run's keys answer to no one now
    data.mkdir(mode=0o700)
    private_file(redis.config, render(redis, data))
    private_file(state / "redis.url", redis.url() + "\n")
    return redis


def render(redis: LocalRedis, workdir: Path) -> str:
    """redis.conf: 127.0.0.1:port, no snapshots, an append-only file in `workdir`, and the
    password. Values are double-quoted with `\\` and `"` escaped, as redis.conf reads them."""
    return "".join(f"{name} {_quoted(value)}\n" for name, value in (
        ("port", str(redis.port)), ("bind", HOST), ("save", ""), ("appendonly", "yes"),
        ("appendfsync", "everysec"), ("dir", str(workdir)), ("requirepass", redis.password)))


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
