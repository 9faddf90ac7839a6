"""A revocation heard by a gateway ends what the key has running (gateway/auth_client.py):
its open streams at once (`MeshClient.end_streams`), and a request of it that was waiting
without a stream (on a result-cache leader) when it is about to be served or routed
(`check_revoked`, which gateway/app.py `_open` calls). Audit d saw a waiter answered 200
after its key was revoked."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.auth_client import REVOKED_KEPT, Authenticator
from gateway.errors import ApiError
from kvmesh.wire import Revoked


class _Mesh:
    """What the authenticator reads of a MeshClient here: its settings, and whose streams
    it asked to end."""

    def __init__(self) -> None:
        self.cfg = SimpleNamespace(auth=True, auth_timeout=1.0)
        self.ended: list[tuple[set[str], ApiError]] = []

    def end_streams(self, key_ids: set[str], err: ApiError) -> None:
        self.ended.append((key_ids, err))


def _revoke(auth: Authenticator, **fields: Any) -> None:
    asyncio.run(auth._on_revoked(Revoked(**fields), None))


def test_a_revoked_keys_streams_end_and_its_waiting_requests_are_refused() -> None:
    mesh = _Mesh()
    auth = Authenticator(mesh)  # type: ignore[arg-type]
    auth.check_revoked("k1")  # nothing revoked: passes
    _revoke(auth, key_ids=["k1"])
    assert mesh.ended[0][0] == {"k1"} and mesh.ended[0][1].code == "key_revoked"
    with pytest.raises(ApiError) as err:
        auth.check_revoked("k1")
    assert (err.value.status, err.value.code) == (401, "key_revoked")
    auth.check_revoked("k2")  # another key of the tenant goes on
    auth.check_revoked("")  # auth off: no key


def test_a_tenant_change_ends_nothing_and_the_memory_is_bounded() -> None:
    mesh = _Mesh()
    auth = Authenticator(mesh)  # type: ignore[arg-type]
    _revoke(auth, tenant="t")  # a tenant's limits changed: its keys stay valid
    assert mesh.ended == []
    _revoke(auth, key_ids=["old"])
    _revoke(auth, key_ids=[f"k{i}" for i in range(REVOKED_KEPT)])
    auth.check_revoked("old")  # the oldest forgotten
    with pytest.raises(ApiError):
        auth.check_revoked("k7")
