"""`x-ratelimit-*` values as OpenAI writes them (gateway/rate_headers.py)."""

from __future__ import annotations

import pytest

from gateway import rate_headers
from kvmesh.wire import AuthOk


@pytest.mark.parametrize("seconds,text", [
    (0, "0s"), (0.0004, "0s"), (0.012, "12ms"), (0.9994, "999ms"), (1, "1s"), (1.5, "1.5s"),
    (12.25, "12.25s"), (60, "1m0s"), (90.5, "1m30.5s"), (360, "6m0s"), (3600, "1h0m0s"),
    (3725, "1h2m5s"), (-1, "0s")])
def test_durations_read_as_openais(seconds: float, text: str) -> None:
    assert rate_headers.duration(seconds) == text


def test_only_the_limits_a_tenant_has_are_told() -> None:
    headers: dict[str, str] = {}
    token = rate_headers._current.set(headers)
    try:
        ok = AuthOk(remaining_requests=4, reset_requests=12.0)
        rate_headers.note(ok, rpm=5, tpm=0)
        assert headers == {"x-ratelimit-limit-requests": "5",
                           "x-ratelimit-remaining-requests": "4",
                           "x-ratelimit-reset-requests": "12s"}
        headers.clear()
        rate_headers.note(AuthOk(), rpm=5, tpm=100)  # admitted without limits (fail_open)
        assert headers == {}
    finally:
        rate_headers._current.reset(token)
    rate_headers.note(AuthOk(remaining_requests=1), rpm=5, tpm=0)  # outside a request: nothing
