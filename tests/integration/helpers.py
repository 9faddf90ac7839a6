"""Small HTTP helpers for tests that need raw responses (status codes, SSE lines)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


def post(url: str, body: bytes | dict[str, Any], timeout: float = 60) -> tuple[int, dict[str, Any],
                                                                             dict[str, str]]:
    """POST and return (status, JSON body, headers), whatever the status."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), dict(err.headers)


def open_stream(url: str, body: dict[str, Any], timeout: float = 60) -> Any:
    """Start a streaming POST; the caller reads lines and closes it."""
    req = urllib.request.Request(url, data=json.dumps({**body, "stream": True}).encode(),
                                 headers={"Content-Type": "application/json"})
    return urllib.request.urlopen(req, timeout=timeout)


def sse_events(resp: Any) -> Any:
    """Yield each `data:` payload (str) of an SSE response, until the stream ends."""
    for raw in resp:
        line = raw.decode().strip()
        if line.startswith("data: "):
            yield line[len("data: "):]
