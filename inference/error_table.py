"""Every error a worker reports, and the HTTP status it becomes: the one table.

Engine refusals are typed (`inference.engine.errors`) and map by type; the worker's own
conditions (draining, full, another model, engine gone) have a constructor each here, so no
status is chosen anywhere else and no caller reads message text.
"""

from __future__ import annotations

from inference.engine.errors import (
    ContextLengthExceeded,
    DuplicateRequest,
    InvalidParameter,
    RequestRejected,
)
from kvmesh.wire import ErrorReply

INVALID = "invalid_request_error"
REJECTED: dict[type[RequestRejected], int] = {
    ContextLengthExceeded: 400,  # as OpenAI: 400 with code context_length_exceeded
    InvalidParameter: 400,
    DuplicateRequest: 409,
}


def rejected(exc: RequestRejected) -> ErrorReply:
    status = next((s for t, s in REJECTED.items() if isinstance(exc, t)), 400)
    return ErrorReply(status, INVALID, str(exc), exc.param, exc.code)


def other_model(served: str, asked: str) -> ErrorReply:
    return ErrorReply(404, INVALID, f"worker serves {served!r}, not {asked!r}", "model",
                      "model_not_found")


def draining(why: str = "worker is draining") -> ErrorReply:
    return ErrorReply(503, "service_unavailable", why, code="draining")


def overloaded(capacity: int) -> ErrorReply:
    return ErrorReply(503, "service_unavailable",
                      f"worker is full ({capacity} requests running or waiting)",
                      code="overloaded", retry_after=1.0)


def engine_stalled(seconds: float) -> ErrorReply:
    return ErrorReply(503, "service_unavailable", f"the worker's engine has made no step for "
                      f"over {seconds:g}s", code="engine_stalled", retry_after=1.0)


def cancelled() -> ErrorReply:
    return ErrorReply(499, "cancelled", "request was cancelled", code="cancelled")


def engine_crashed(why: str) -> ErrorReply:
    return ErrorReply(500, "internal_error", why, code="engine_error")


def engine_gone(why: str) -> ErrorReply:
    return ErrorReply(502, "bad_gateway", f"the worker's engine stopped: {why}",
                      code="worker_died")
