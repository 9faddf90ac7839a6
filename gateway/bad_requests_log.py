"""The HTTP server's logger, with requests it could not parse logged as what they are.

aiohttp answers a request it cannot parse (a header line over 8190 bytes, more than 128
headers, broken syntax) with a 400 of its own before any handler or middleware runs, and
logs it as an ERROR with a traceback. Any client can send one, so each would be an ERROR line
at will: `BadRequestLog` logs it as one WARNING line naming the error's type and status, and
never its text (it quotes the offending header, an API key perhaps). Every other exception
keeps aiohttp's ERROR and traceback.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError


class BadRequestLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Pass as `logger=` to the aiohttp runner."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        super().__init__(logger or logging.getLogger("aiohttp.server"), {})

    def exception(self, msg: object, *args: object, exc_info: Any = True,
                  **kwargs: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 0) < 500:
            self.warning("a request the HTTP parser refused: %s (%d)", type(exc).__name__,
                         exc.code)
            return
        super().exception(msg, *args, exc_info=exc_info, **kwargs)
