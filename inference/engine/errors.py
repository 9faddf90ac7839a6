"""Why the engine refuses a request: typed, so callers map each kind to a status in one table
(`inference/error_table.py`) instead of reading message text.

Every refusal is a `ValueError` subclass whose message starts with the field at fault
(`"prompt: ..."`) and whose `param` names it.
"""

from __future__ import annotations


class RequestRejected(ValueError):
    """The request cannot be served as asked; `param` is the field at fault."""

    code = "invalid_value"

    def __init__(self, param: str, why: str) -> None:
        super().__init__(f"{param}: {why}")
        self.param = param
        self.why = why

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # pickles across the engine pipe
        return (type(self), (self.param, self.why))


class InvalidParameter(RequestRejected):
    """A sampling or request field out of its bounds."""


class ContextLengthExceeded(RequestRejected):
    """The prompt, or the prompt plus `max_tokens`, does not fit the context (which the KV pool
    bounds: engine_setup.py)."""

    code = "context_length_exceeded"


class DuplicateRequest(RequestRejected):
    """A request id that is already running."""

    code = "duplicate_request"
