"""`kvmesh up`'s Redis requires the password of its private config: a client without it gets
NOAUTH, the URL written beside it connects, and the password reaches no command line and no log
line. A Redis killed and started again keeps its data; a new run starts empty."""

from __future__ import annotations

import signal
import socket
import stat
from pathlib import Path

import redis

from kvmesh.cli import local_redis, procs
from telemetry.redact import redact

ODD = 'p@ss/w:rd "x" \\y'  # every character that needs quoting in a URL or in redis.conf


def test_redis_refuses_a_client_without_the_password_and_serves_the_url(tmp_path: Path) -> None:
    state = tmp_path / 'state "dir"'  # the config quotes its dir too
    state.mkdir()
    port = procs.free_port()
    local = local_redis.prepare(state, port, ODD)
    child = procs.start_redis(port, str(state), open(state / "redis.log", "ab"),  # noqa: SIM115
                              config=str(local.config))
    try:
        assert ODD.encode() not in Path(f"/proc/{child.proc.pid}/cmdline").read_bytes()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as stranger:
            stranger.sendall(b"PING\r\n")
            assert stranger.recv(128).startswith(b"-NOAUTH")
        url = (state / "redis.url").read_text().strip()
        assert url == local.url()
        with redis.Redis.from_url(url) as client:
            assert client.ping()
            assert client.config_get("dir")["dir"] == str(state / "redis-data")
            client.set("kvmesh:key:dev", "record")
    finally:
        child.stop(sig=signal.SIGKILL)  # as a crash: the append-only file is all that is left
    for name in ("redis.conf", "redis.url"):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name
    again = procs.start_redis(port, str(state), open(state / "redis.log", "ab"),  # noqa: SIM115
                              config=str(local.config))
    try:  # a restart keeps the run's keys: the write is in the append-only file (the OS
        # holds it without the fsync, which comes every second)
        with redis.Redis.from_url(url) as client:
            assert client.get("kvmesh:key:dev") == b"record"
    finally:
        again.stop()
    local_redis.prepare(state, port, ODD)  # a new run starts empty
    assert not any((state / "redis-data").iterdir())


def test_fresh_passwords_differ_and_the_url_carries_them_quoted_and_redacted(
        tmp_path: Path) -> None:
    first, second = (local_redis.prepare(tmp_path, 6379) for _ in range(2))
    assert first.password != second.password and len(first.password) >= 32
    odd = local_redis.prepare(tmp_path, 6379, ODD).url()
    assert odd == "redis://:p%40ss%2Fw%3Ard%20%22x%22%20%5Cy@127.0.0.1:6379/0"
    assert redact(f"result cache on {odd}") == "result cache on redis://:***@127.0.0.1:6379/0"
