"""Auth with its Redis unreachable: every call is bounded by `redis_timeout`; verification
fails closed (503 `auth_unavailable`), and admission fails closed unless `fail_open` is set,
in which case it admits without limits (the documented setting, docs/RELIABILITY.md)."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from auth import keys
from auth.service import AuthService
from auth.store import AuthStore
from kvmesh.config import AuthConfig
from kvmesh.wire import Admit, AuthOk, ErrorReply, VerifyKey


@pytest.fixture
def blackhole() -> str:
    """A port that accepts TCP connections and never answers (a hung Redis)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    sock.close()


def service(url: str, fail_open: bool) -> AuthService:
    cfg = AuthConfig(redis_url=url, redis_timeout=0.3, fail_open=fail_open)
    return AuthService(cfg, AuthStore.from_url(url, cfg.redis_timeout))


@pytest.mark.parametrize("fail_open", [False, True])
async def test_hung_redis_is_bounded_and_fails_by_the_setting(blackhole: str,
                                                              fail_open: bool) -> None:
    svc = service(blackhole, fail_open)
    admit = svc._redis_down(svc._admit, admission=True)
    verify = svc._redis_down(svc._verify)
    started = time.monotonic()
    answer = await asyncio.wait_for(admit(Admit("t", "r1", 10, 0, 0), None), 5)
    assert time.monotonic() - started < 2
    if fail_open:
        assert isinstance(answer, AuthOk)
    else:
        assert isinstance(answer, ErrorReply) and answer.status == 503
        assert answer.code == "auth_unavailable" and answer.retry_after
    started = time.monotonic()
    answer = await asyncio.wait_for(verify(VerifyKey(keys.generate()[0]), None), 5)
    assert time.monotonic() - started < 2
    assert isinstance(answer, ErrorReply) and answer.status == 503  # never let through
    await svc.store.close()


async def test_stopped_redis_fails_closed_at_once() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed
    svc = service(f"redis://127.0.0.1:{port}/0", fail_open=False)
    answer = await svc._redis_down(svc._admit, admission=True)(Admit("t", "r", 10, 0, 0), None)
    assert isinstance(answer, ErrorReply) and answer.status == 503
    await svc.store.close()
