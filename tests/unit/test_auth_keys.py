"""API key format and hashing, tenant validation: pure functions, no services."""

from __future__ import annotations

import pytest

from auth import keys
from auth.tenant import PRIORITY_CLASSES, Tenant, TenantError


def test_generated_key_parses_to_its_id_and_secret() -> None:
    plain, key_id, secret = keys.generate()
    assert keys.parse(plain) == (key_id, secret)
    assert plain.startswith("kvm_") and secret not in key_id


@pytest.mark.parametrize(
    "bad", ["", "sk-abc", "kvm_xyz_abc", "kvm_0123456789ab_short", "kvm_0123456789AB_" + "a" * 43]
)
def test_malformed_keys_are_refused(bad: str) -> None:
    with pytest.raises(keys.MalformedKey):
        keys.parse(bad)


def test_salted_hash_matches_only_its_secret_and_differs_per_salt() -> None:
    _, _, secret = keys.generate()
    salt = keys.new_salt()
    stored = keys.digest(salt, secret)
    assert secret not in stored
    assert keys.matches(salt, stored, secret)
    assert not keys.matches(salt, stored, secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    assert keys.digest(keys.new_salt(), secret) != stored


def test_tenant_defaults_and_validation() -> None:
    t = Tenant.from_dict({"name": "acme", "models": "a,b", "priority": "high", "rpm": 5})
    assert t.models == ["a", "b"] and t.priority_value == PRIORITY_CLASSES["high"]
    assert t.allows("a") and not t.allows("c")
    assert Tenant.from_dict({"name": "all"}).allows("anything")
    for body, param in [
        ({"name": "bad name"}, "name"),
        ({"name": "x", "rpm": -1}, "rpm"),
        ({"name": "x", "priority": "urgent"}, "priority"),
        ({"name": "x", "models": []}, "models"),
        ({"name": "x", "admin": "yes"}, "admin"),
    ]:
        with pytest.raises(TenantError) as err:
            Tenant.from_dict(body)
        assert err.value.param == param
