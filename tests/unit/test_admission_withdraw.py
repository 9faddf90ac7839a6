"""`Admission.hold` when auth does not answer the admission, or the client leaves while it
waits: the 503 goes out at once (no wait for a release), and the request is withdrawn so it
takes nothing, whenever its admission lands (audit i). `ask` is the admission's one door to
auth (NATS in the gateway); here it answers from a script."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.admission import Admission, Ticket
from gateway.errors import ApiError
from kvmesh import wire
from kvmesh.wire import AuthOk, Message, Settle


class _Auth:
    """Admissions answer after `admit_s` (or never answer: an ApiError 503 after `timeout`)."""

    def __init__(self, admit: str, timeout: float = 0.5) -> None:
        self.admit, self.timeout = admit, timeout
        self.settles: list[Settle] = []

    async def ask(self, subject: str, msg: Message) -> Message:
        if subject == wire.AUTH_ADMIT:
            if self.admit == "silent":
                await asyncio.sleep(self.timeout)
                raise ApiError(503, "auth did not answer", code="auth_unavailable")
            await asyncio.sleep(0.2)
            return AuthOk(30.0)
        assert isinstance(msg, Settle)
        self.settles.append(msg)
        return AuthOk()


def _ticket() -> Ticket:
    return Ticket("t", rpm=5, tpm=100, max_concurrency=1, reserved=40)


def test_an_admission_auth_never_answers_is_a_503_at_once_and_withdrawn() -> None:
    auth = _Auth("silent")

    async def main() -> float:
        started = time.monotonic()
        with pytest.raises(ApiError) as err:
            async with Admission(auth.ask, auth.timeout).hold(_ticket()):
                pass
        assert err.value.status == 503
        took = time.monotonic() - started
        await asyncio.sleep(0.05)  # the withdrawal goes in the background
        return took
    took = asyncio.run(main())
    assert took < auth.timeout * 1.5, took  # not a second `timeout` waiting on a release
    assert [(s.tokens, s.withdraw, s.rpm) for s in auth.settles] == [(0, True, 5)]


def test_a_client_that_leaves_during_its_admission_withdraws_it() -> None:
    auth = _Auth("slow")

    async def main() -> None:
        async def handler() -> None:
            async with Admission(auth.ask, 1.0).hold(_ticket()):
                raise AssertionError("never admitted: its client left")
        task = asyncio.ensure_future(handler())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.3)  # the admission lands meanwhile; nobody waits for it
    asyncio.run(main())
    assert [(s.tokens, s.withdraw) for s in auth.settles] == [(0, True)]


def test_an_admitted_request_settles_what_it_used() -> None:
    auth = _Auth("slow")

    async def main() -> None:
        async with Admission(auth.ask, 1.0).hold(_ticket()) as ticket:
            ticket.settle(12)
    asyncio.run(main())
    assert [(s.tokens, s.withdraw, s.rpm) for s in auth.settles] == [(12, False, 5)]


def test_a_client_that_leaves_before_a_worker_took_its_request_is_charged_nothing() -> None:
    """Admitted, then cancelled while it waited (on a cached answer's leader, or a route)
    with nothing settled: a charge of 0, not its whole reservation (audit i)."""
    auth = _Auth("slow")

    async def main() -> None:
        async def handler() -> None:
            async with Admission(auth.ask, 1.0).hold(_ticket()):
                await asyncio.sleep(30)  # waiting on the leader
        task = asyncio.ensure_future(handler())
        await asyncio.sleep(0.4)  # admitted by now
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    asyncio.run(main())
    assert [(s.tokens, s.withdraw) for s in auth.settles] == [(0, False)]
