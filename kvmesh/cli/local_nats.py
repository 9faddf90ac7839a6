"""`kvmesh up`'s NATS runs with a user per service, as compose's does (deploy/nats.conf).

`prepare(state_dir, port)` makes fresh random passwords for every role of
`kvmesh.cli.nats_permissions.ROLES`, writes `<state_dir>/nats.conf` (the same generated
permissions, on 127.0.0.1, no monitor, no JetStream) and `<state_dir>/nats-ops.url`, the
operator's URL (`kvmesh keys --nats-url`, tests asking a worker's stats), both readable by the
owner only. Passwords exist only in those files and in the children's environments; log lines
redact them (telemetry/redact.py).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from kvmesh.cli.nats_permissions import ROLES, render, role_url

HOST = "127.0.0.1"


@dataclass(frozen=True)
class LocalNats:
    port: int
    config: Path
    passwords: dict[str, str]  # role name -> password

    def server_env(self) -> dict[str, str]:
        """What nats-server needs in its environment: the `$KVMESH_NATS_<ROLE>_PASSWORD`s."""
        return {r.password_var: self.passwords[r.name] for r in ROLES}

    def url(self, role: str) -> str:
        """The URL a service of `role` (gateway, router, worker, auth, cache, ops) connects to."""
        return role_url(role, self.passwords[role], HOST, self.port)


def private_file(path: Path, text: str) -> None:
    """Write `text` to `path`, readable and writable by the owner only (0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)  # an older file may have had wider rights


def prepare(state: Path, port: int) -> LocalNats:
    nats = LocalNats(port, state / "nats.conf",
                     {r.name: _password() for r in ROLES})
    private_file(nats.config, render(port, http_port=None, store_dir=None, host=HOST))
    private_file(state / "nats-ops.url", nats.url("ops") + "\n")
    return nats


def _password() -> str:
    """A fresh password nats-server reads as a string: one that starts with a digit or '-' is
    parsed as a number and stops the server (seen: about one start in six)."""
    return "k" + secrets.token_hex(24)
