"""The admin API through a real gateway and auth actor: a key a body does not define is a 400
naming it (a misspelt limit must not leave a tenant unlimited unnoticed), and every error
carries a code, as the rest of the gateway's do."""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.faults.fake_mesh import ADMIN_KEY, FakeMesh
from tests.integration.helpers import call


def _error(fmesh: FakeMesh, method: str, path: str, body: dict[str, Any] | None,
           status: int) -> dict[str, Any]:
    got, reply, _ = call(method, fmesh.auth_url + path, body, ADMIN_KEY)
    assert got == status, reply
    return reply["error"]


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/admin/tenants", {"name": "x", "foo": 1}, "foo"),
    ("/admin/tenants", {"name": "x", "rpmm": 5}, "rpmm"),
    ("/admin/keys", {"tenant": "capt", "foo": 1}, "foo"),
])
def test_unknown_keys_are_400_unknown_parameter(fmesh: FakeMesh, path: str,
                                                body: dict[str, Any], param: str) -> None:
    err = _error(fmesh, "POST", path, body, 400)
    assert (err["param"], err["code"]) == (param, "unknown_parameter"), err
    assert err["message"].startswith(param + ": unknown field")


def test_nothing_is_created_by_a_refused_body(fmesh: FakeMesh) -> None:
    _error(fmesh, "POST", "/admin/tenants", {"name": "never-made", "foo": 1}, 400)
    err = _error(fmesh, "GET", "/admin/tenants/never-made", None, 404)
    assert err["code"] == "tenant_not_found"


@pytest.mark.parametrize(("method", "path", "body", "status", "param", "code"), [
    ("POST", "/admin/tenants", {"name": "x", "rpm": -1}, 400, "rpm", "invalid_value"),
    ("POST", "/admin/tenants", {"name": "bad name"}, 400, "name", "invalid_value"),
    ("GET", "/admin/tenants/no-such-tenant", None, 404, "name", "tenant_not_found"),
    ("POST", "/admin/keys", {"tenant": "no-such-tenant"}, 404, "tenant", "tenant_not_found"),
    ("POST", "/admin/keys", {}, 400, "tenant", "invalid_type"),
    ("POST", "/admin/keys", {"tenant": "x", "name": 3}, 400, "name", "invalid_type"),
    ("DELETE", "/admin/keys/no-such-key", None, 404, "id", "key_not_found"),
])
def test_every_admin_error_has_a_code(fmesh: FakeMesh, method: str, path: str,
                                      body: dict[str, Any] | None, status: int, param: str,
                                      code: str) -> None:
    err = _error(fmesh, method, path, body, status)
    assert (err["param"], err["code"]) == (param, code), err


def test_admin_bodies_are_read_as_the_api_reads_its_own(fmesh: FakeMesh) -> None:
    """gzip is decoded (the gateway, not aiohttp, undoes codings), a corrupt body is a 400."""
    body = gzip.compress(json.dumps({"name": "zipped", "rpm": 7}).encode())
    req = urllib.request.Request(fmesh.auth_url + "/admin/tenants", data=body, method="POST",
                                 headers={"Authorization": f"Bearer {ADMIN_KEY}",
                                          "Content-Type": "application/json",
                                          "Content-Encoding": "gzip"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200
    got, tenant, _ = call("GET", fmesh.auth_url + "/admin/tenants/zipped", None, ADMIN_KEY)
    assert (got, tenant["rpm"]) == (200, 7), tenant
    req.data = b"not gzip"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 400
    assert json.loads(err.value.read())["error"]["code"] == "invalid_body"


def test_an_admin_body_that_is_no_json_object_is_invalid_json(fmesh: FakeMesh) -> None:
    got, reply, _ = call("POST", fmesh.auth_url + "/admin/tenants", b"[1]", ADMIN_KEY)
    assert (got, reply["error"]["code"]) == (400, "invalid_json"), reply
