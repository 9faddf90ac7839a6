"""Operator commands find `kvmesh up`'s NATS and Redis (kvmesh/local_urls.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmesh import local_urls


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("KVMESH_NATS_URL", "KVMESH_REDIS_URL", "KVMESH_UP_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KVMESH_STATE_DIR", str(tmp_path))
    return tmp_path


def test_without_kvmesh_up_the_plain_local_urls(state: Path) -> None:
    assert local_urls.nats_url() == "nats://127.0.0.1:4222"
    assert local_urls.redis_url() == "redis://127.0.0.1:6379/0"


def test_kvmesh_ups_written_urls_are_the_default(state: Path) -> None:
    (state / "nats-ops.url").write_text("nats://ops:secret@127.0.0.1:4310\n")
    (state / "redis.url").write_text("redis://:pw@127.0.0.1:6410/0\n")
    assert local_urls.nats_url() == "nats://ops:secret@127.0.0.1:4310"
    assert local_urls.redis_url() == "redis://:pw@127.0.0.1:6410/0"


def test_the_variables_win(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (state / "nats-ops.url").write_text("nats://ops:secret@127.0.0.1:4310\n")
    monkeypatch.setenv("KVMESH_NATS_URL", "nats://elsewhere:4222")
    assert local_urls.nats_url() == "nats://elsewhere:4222"
