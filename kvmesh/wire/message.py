"""What every wire message is: the `Message` base, the `ErrorReply` any request may get back,
and the request-id header every hop carries.

A `Message` subclass is a dataclass with a unique `KIND`, registered with the codec
(`kvmesh.wire.codec.register`) by the module that declares it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from kvmesh.wire import codec

REQUEST_ID_HEADER = "Kvmesh-Request-Id"  # NATS and HTTP header: the request a message serves


@dataclass
class Message:
    """Base of every wire message; `KIND` names its kind in the frame."""

    KIND: ClassVar[str] = ""


@dataclass
class ErrorReply(Message):
    """An error a user may see, already in the OpenAI error shape's terms and an HTTP status."""

    KIND: ClassVar[str] = "error"
    status: int
    type: str
    message: str
    param: str | None = None
    code: str | None = None
    retry_after: float | None = None


codec.register(ErrorReply)  # any subject may answer with it (kvmesh.actor does, on a failure)


def model_not_found(model: str) -> ErrorReply:
    """OpenAI's 404 for a model that does not exist or that the key may not use: one answer
    for both, whichever hop gives it, so a key learns nothing of the models outside its
    scopes."""
    return ErrorReply(404, "invalid_request_error",
                      f"the model {model!r} does not exist or you do not have access to it",
                      "model", "model_not_found")
