"""Small helpers for integration tests: raw HTTP calls (status codes, SSE lines), ports for a
mesh that is yet to bind them, and waiting on a condition (never on a guessed sleep)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _headers(key: str | None) -> dict[str, str]:
    """JSON content type, and `key` as a bearer token, or as the whole Authorization header
    when it holds a space ("Basic abc")."""
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = key if " " in key else f"Bearer {key}"
    return headers


def call(method: str, url: str, body: bytes | dict[str, Any] | None = None,
         key: str | None = None, timeout: float = 60) -> tuple[int, dict[str, Any],
                                                            dict[str, str]]:
    """(status, JSON body, headers), whatever the status; `key` as `_headers` sends it."""
    headers = _headers(key)
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), dict(err.headers)


def post(url: str, body: bytes | dict[str, Any], timeout: float = 60) -> tuple[int, dict[str, Any],
                                                                             dict[str, str]]:
    """POST and return (status, JSON body, headers), whatever the status."""
    return call("POST", url, body, timeout=timeout)


def open_stream(url: str, body: dict[str, Any], timeout: float = 60,
                key: str | None = None) -> Any:
    """Start a streaming POST; the caller reads lines and closes it."""
    req = urllib.request.Request(url, data=json.dumps({**body, "stream": True}).encode(),
                                 headers=_headers(key))
    return urllib.request.urlopen(req, timeout=timeout)


def sse_events(resp: Any) -> Any:
    """Yield each `data:` payload (str) of an SSE response, until the stream ends."""
    for raw in resp:
        line = raw.decode().strip()
        if line.startswith("data: "):
            yield line[len("data: "):]


def read_banner(up: Any, timeout: float) -> str:
    """What `kvmesh up` (a Popen with text stdout) prints until its banner ends; fails if it
    exits first or takes longer than `timeout` seconds."""
    import time

    banner = ""
    deadline = time.monotonic() + timeout
    while "Ctrl-C stops everything" not in banner:
        line = up.stdout.readline()
        assert line or up.poll() is None, banner
        banner += line
        assert time.monotonic() < deadline, banner
    return banner


def free_ports(singles: int, run: int) -> tuple[list[int], int]:
    """`singles` distinct free ports and the first of `run` consecutive free ports, none of
    the singles inside the run (`kvmesh up` derives its services' metrics ports from one base,
    so a NATS or Redis port there would collide).

    All come from `procs.free_port`, outside the kernel's ephemeral range (CI saw a worker's
    metrics port taken as the local end of some connection before the worker bound it)."""
    from kvmesh.cli import procs

    first = procs.free_port(run)
    taken: set[int] = set(range(first, first + run))
    singles_out: list[int] = []
    while len(singles_out) < singles:
        port = procs.free_port()
        if port not in taken:
            taken.add(port)
            singles_out.append(port)
    return singles_out, first


def children(pid: int) -> list[int]:
    """The processes `pid` started."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids = (task / "children").read_text().split()
        out += [int(k) for k in kids]
    return out


def engine_pid(worker_pid: int, timeout: float = 30) -> int:
    """The worker's engine process: its child that runs multiprocessing's spawn entry."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in children(worker_pid):
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                return child
        time.sleep(0.2)
    raise AssertionError(f"worker {worker_pid} has no engine process")


def wait_until(ok: Callable[[], Any], what: str, timeout: float = 60) -> None:
    """Poll `ok` until it is true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g}s"
        time.sleep(0.1)
