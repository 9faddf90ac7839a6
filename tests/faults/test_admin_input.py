"""Bad input to the admin API (issue 13, item 11) is a 400 naming the problem, never a 500:
deep JSON, lone surrogates, integers past 64 bits (or past what a limit can hold), and tenant
names that only look valid (a trailing newline)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.faults.fake_mesh import ADMIN_KEY, FakeMesh
from tests.integration.helpers import call

TENANTS = "/admin/tenants"


def _nested(depth: int) -> bytes:
    return b'{"name": "deep", "models": ' + b"[" * depth + b"]" * depth + b"}"


BAD_BODIES: list[tuple[str, bytes | dict[str, Any]]] = [
    ("deep-100", _nested(100)),
    ("deep-600", _nested(600)),  # past msgpack's 512
    ("deep-5000", _nested(5000)),  # past Python's recursion limit
    ("lone-surrogate", b'{"name": "x\\ud800"}'),
    ("lone-surrogate-model", b'{"name": "ok-name", "models": ["\\udfff"]}'),
    ("int-2^64", b'{"name": "big", "rpm": 18446744073709551616}'),
    ("int-2^63-rpm", {"name": "big", "rpm": 1 << 63}),
    ("int-negative-2^64", b'{"name": "big", "tpm": -18446744073709551616}'),
    ("newline-name", {"name": "tenant\n"}),
    ("newline-group", {"name": "fine", "prefix_cache_group": "g\n"}),
]


@pytest.mark.parametrize("body", [b for _, b in BAD_BODIES], ids=[i for i, _ in BAD_BODIES])
def test_bad_admin_input_is_a_400_in_the_openai_shape(fmesh: FakeMesh, body: Any) -> None:
    status, reply, _ = call("POST", fmesh.auth_url + TENANTS, body, ADMIN_KEY)
    assert status == 400, reply
    err = reply["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]


def test_the_same_input_to_the_generation_api_is_a_400_too(fmesh: FakeMesh) -> None:
    body = b'{"model": "fake-model", "prompt": "hi", "seed": 18446744073709551616}'
    status, reply, _ = call("POST", fmesh.open_url + "/v1/completions", body)
    assert status == 400 and reply["error"]["code"] in ("invalid_json", "invalid_value"), reply


def test_after_the_bad_input_everything_still_works(fmesh: FakeMesh) -> None:
    status, reply, _ = call("POST", fmesh.auth_url + TENANTS,
                            {"name": "still-fine", "rpm": (1 << 53) - 1}, ADMIN_KEY)
    assert status == 200, reply
    status, reply, _ = call("GET", fmesh.auth_url + TENANTS + "/still-fine", key=ADMIN_KEY)
    assert status == 200 and reply["rpm"] == (1 << 53) - 1
    assert all(fmesh.alive().values()), fmesh.alive()
