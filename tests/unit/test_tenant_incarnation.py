"""A tenant deleted and created again under its name is another customer: the mesh stamps
each creation with an incarnation, which keys the tenant's result-cache entries and private
prefix-cache blocks (the security audit saw the old tenant's cached answer served to the
new one). Updates keep it; the admin API cannot set it; tenants stored before it keep their
old keys."""

from __future__ import annotations

import pytest

from auth.tenant import Tenant, TenantError, updated


def test_each_creation_has_its_own_incarnation_and_updates_keep_it() -> None:
    first, again = updated(None, {"name": "acme"}), updated(None, {"name": "acme"})
    assert len(first.incarnation) == 16 and first.incarnation != again.incarnation
    assert first.cache_salt != again.cache_salt and first.scope != again.scope
    raised = updated(first, {"rpm": 5})
    assert (raised.incarnation, raised.rpm) == (first.incarnation, 5)


def test_the_admin_api_cannot_set_it() -> None:
    with pytest.raises(TenantError) as err:
        updated(None, {"name": "acme", "incarnation": "0" * 16})
    assert err.value.param == "incarnation"


def test_a_tenant_stored_before_keeps_its_keys_and_a_group_shares_its_salt() -> None:
    old = Tenant("acme")  # as read back from a record without the field
    assert (old.scope, old.cache_salt) == ("acme", "tenant:acme")
    grouped = updated(None, {"name": "acme", "prefix_cache_group": "shared"})
    assert grouped.cache_salt == "group:shared" and grouped.scope.startswith("acme#")
