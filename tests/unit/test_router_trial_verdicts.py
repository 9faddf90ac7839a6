"""Every attempt at a worker ends a half-open circuit's trial: one the router could not send
(too large for NATS, its own link down) gives the trial back, and a worker that answered 503
`overloaded` (full, alive) closes it. An audit found those three left the trial out, so the
router never offered that worker again until it restarted."""

from __future__ import annotations

from typing import Any

import pytest

from kvmesh.actor import NotConnected, PayloadTooLarge, RemoteError
from kvmesh.config import RouterConfig
from kvmesh.wire import ErrorReply, Heartbeat, TokenizedRequest
from router.service import Router
from router.tokenize import PromptTokenizer

FULL = ErrorReply(503, "service_unavailable", "full", code="overloaded")


@pytest.mark.parametrize("outcome", [PayloadTooLarge(2_000_000, 1_048_576),
                                     NotConnected("gone"), RemoteError(FULL)],
                         ids=["too_large", "not_connected", "overloaded"])
async def test_a_trial_with_no_failure_of_the_workers_leaves_it_offered(outcome: Any) -> None:
    router = Router(RouterConfig(breaker_failures=1, breaker_cooldown=0.0, max_attempts=1),
                    PromptTokenizer(None))
    router.workers.observe(Heartbeat("w0", "m", 0, 0, 0.1, 100, 90, max_model_len=64))
    router.breakers.failure("w0")  # open, and at once half-open (no cool-down)
    assert router.breakers.state("w0") == "half-open" and router.breakers.allows("w0")

    async def answer(*args: Any, **kwargs: Any) -> Any:
        assert not router.breakers.allows("w0")  # the trial is out
        raise outcome

    router.request = answer  # type: ignore[method-assign]
    req = TokenizedRequest(request_id="r1", model="m", reply_to="inbox",
                           prompt_token_ids=[1, 2, 3])
    await router._forward(req, router.workers.live("m"), "", None)
    assert router.breakers.allows("w0")
