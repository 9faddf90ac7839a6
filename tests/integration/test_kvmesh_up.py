"""`kvmesh up` as a user runs it: serves a chat completion, keeps its Redis behind a password,
then stops on SIGINT leaving no process behind."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

from kvmesh.cli import procs
from tests.integration.conftest import MODEL
from tests.integration.helpers import free_ports, read_banner


def processes_mentioning(*needles: str) -> list[int]:
    """Pids whose command line or environment contains any of `needles`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            text = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if any(n.encode() in text for n in needles):
            found.append(int(entry.name))
    return found


# Files a user's directory may well hold, named like kvmesh's packages.
SHADOWS = ("cache", "gateway", "router", "auth", "inference")


def test_kvmesh_up_serves_and_stops_cleanly(tmp_path: Path) -> None:
    """Run as the installed `kvmesh` command from a directory whose files are named like
    kvmesh's packages: no child imports them in their place (RELIABILITY round ten, row 18)."""
    from openai import OpenAI

    kvmesh = str(Path(sys.executable).parent / "kvmesh")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for name in SHADOWS:
        (cwd / f"{name}.py").write_text(f"raise SystemExit('{name}.py of the current directory')\n")
    state = tmp_path / "state"
    port, nats_port, redis_port = procs.free_port(), procs.free_port(), procs.free_port()
    up = subprocess.Popen(
        [kvmesh, "up", "--port", str(port),
         "--nats-port", str(nats_port), "--redis-port", str(redis_port),
         "--state-dir", str(state), "--workers", "1", "--grace-period", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd)
    try:
        banner = read_banner(up, 180)
        assert f"http://127.0.0.1:{port}" in banner

        second = subprocess.run(
            [kvmesh, "up", "--port", str(procs.free_port()),
             "--state-dir", str(state)], capture_output=True, text=True, timeout=60, cwd=cwd)
        assert second.returncode == 1 and "already running" in second.stderr

        key = next(line.split(": ")[-1] for line in banner.splitlines() if "API key" in line)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
        resp = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hello!"}], max_tokens=5)
        assert resp.choices[0].message.content
        _redis_refuses_strangers_and_serves_its_url(state, redis_port)
        needles = (f"127.0.0.1:{nats_port}", f"-p {nats_port}", str(redis_port))
        children = processes_mentioning(*needles)
        assert len(children) >= 5  # nats, redis, router, worker, gateway (auth, cache)
        assert len(_pids_with_all("kvmesh.cli.serve\0router", str(nats_port))) == 1
        # every service drains for --grace-period (kvmesh up gives it to each)
        assert len(_pids_with_all("kvmesh.cli.serve\0worker", str(nats_port),
                                  "KVMESH_GRACE_PERIOD=3.0\0")) == 1

        started = time.monotonic()
        up.send_signal(signal.SIGINT)
        up.wait(timeout=15)
        assert time.monotonic() - started < 10
        assert up.returncode == 0
        time.sleep(0.2)
        assert processes_mentioning(*needles) == []
    finally:
        if up.poll() is None:
            up.kill()


def _redis_refuses_strangers_and_serves_its_url(state: Path, port: int) -> None:
    """Another local user's client gets NOAUTH; the URL in `<state>/redis.url` works; that file
    and the config holding the password are the owner's alone; no command line (what `ps` shows
    everyone) and no log line holds the password."""
    import redis

    for name in ("redis.url", "redis.conf"):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name
    with socket.create_connection(("127.0.0.1", port), timeout=5) as stranger:
        stranger.sendall(b"SET kvmesh:stranger 1\r\n")
        assert stranger.recv(128).startswith(b"-NOAUTH")
    url = (state / "redis.url").read_text().strip()
    with redis.Redis.from_url(url) as client:
        assert client.ping()
    password = unquote(urlsplit(url).password or "")
    assert len(password) >= 32
    cmdlines = [_read(p) for p in Path("/proc").glob("[0-9]*/cmdline")]
    assert not [c for c in cmdlines if password.encode() in c]
    # Only the two services that use Redis have its password in their environment: not the
    # router, the workers, their engine processes or the gateway.
    holders = [_read(p.parent / "cmdline").split(b"\0")
               for p in Path("/proc").glob("[0-9]*/environ") if password.encode() in _read(p)]
    assert sorted(_role(argv) for argv in holders) == [b"auth", b"cache"], holders
    for log in (state / "logs").glob("*.log"):
        assert password not in log.read_text(errors="replace"), log.name


def _role(argv: list[bytes]) -> bytes:
    """The service a `kvmesh.cli.serve` command line runs; else the whole command line."""
    if b"kvmesh.cli.serve" in argv:
        return argv[argv.index(b"kvmesh.cli.serve") + 1]
    return b" ".join(argv)


def _read(path: Path) -> bytes:
    """The file's bytes; none when it is gone or not ours to read (a process that ended)."""
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _pids_with_all(*needles: str) -> list[int]:
    """Pids whose command line and environment hold every one of `needles`."""
    return [pid for pid in processes_mentioning(needles[0])
            if all(n.encode() in _proc_text(pid) for n in needles)]


def _proc_text(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes() + Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def test_killed_worker_is_restarted_the_mesh_serves_throughout_and_a_killed_launcher_leaves_nothing(
        tmp_path: Path) -> None:
    """`kvmesh up --workers 2 --gateways 2 --hosted-router true`: SIGKILL one worker; every
    request meanwhile is served (by the survivor, routed by the gateways' own routers) and the
    launcher restarts the dead one. Then SIGKILL the launcher itself: its children die with it
    and free the ports."""
    from openai import OpenAI

    from tests.integration.conftest import _ask_stats

    (port, nats_port, redis_port), mport = free_ports(3, run=8)  # metrics: (router), w0..gateways
    up = subprocess.Popen(
        [sys.executable, "-m", "kvmesh.cli", "up", "--port", str(port),
         "--nats-port", str(nats_port), "--redis-port", str(redis_port),
         "--metrics-port", str(mport), "--state-dir", str(tmp_path),
         "--workers", "2", "--gateways", "2", "--hosted-router", "true"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        cwd=Path(__file__).resolve().parents[2])
    at_nats = f"127.0.0.1:{nats_port}"  # in every child's command line or environment
    needles = (at_nats, f"-p\0{nats_port}", f"127.0.0.1:{redis_port}")  # redis: its title
    try:
        banner = read_banner(up, 240)
        assert "router (in the gateways)" in banner  # no router port to scrape
        key = next(line.split(": ")[-1] for line in banner.splitlines() if "API key" in line)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0,
                        timeout=30)
        nats_url = (tmp_path / "nats-ops.url").read_text().strip()  # NATS has a user per role
        assert not _worker_answers(f"nats://{at_nats}", "w0", _ask_stats)  # none: refused
        deadline = time.monotonic() + 180  # the banner needs one worker; this test both
        while not all(_worker_answers(nats_url, w, _ask_stats) for w in ("w0", "w1")):
            assert time.monotonic() < deadline, "the workers did not come up"
            time.sleep(0.5)
        (w0,) = _pids_with_all("kvmesh.cli.serve\0worker", "KVMESH_WORKER_WORKER_ID=w0", at_nats)
        assert len(_pids_with_all("kvmesh.cli.serve\0gateway", at_nats)) == 2
        # each gateway hosts its router, as the router's NATS user; no router process runs
        assert len(_pids_with_all("kvmesh.cli.serve\0gateway", at_nats,
                                  "KVMESH_GATEWAY_COLOCATE_ROUTER=1",
                                  "KVMESH_ROUTER_NATS_URL=nats://router:")) == 2
        assert _pids_with_all("kvmesh.cli.serve\0router", at_nats) == []
        os.kill(w0, signal.SIGKILL)
        served = 0
        deadline = time.monotonic() + 180
        while True:  # serve throughout, until the restarted w0 answers on its own subject
            resp = client.completions.create(model=MODEL, prompt="Hi", max_tokens=2)
            assert resp.choices[0].text is not None
            served += 1
            restarted = [p for p in _pids_with_all("kvmesh.cli.serve\0worker",
                                                   "KVMESH_WORKER_WORKER_ID=w0", at_nats)
                         if p != w0]
            if restarted and _worker_answers(nats_url, "w0", _ask_stats):
                break
            assert time.monotonic() < deadline, "w0 was not restarted"
        assert served >= 1

        up.kill()  # SIGKILL: no chance to stop anything itself
        up.wait(10)
        deadline = time.monotonic() + 15
        while processes_mentioning(*needles) or procs.port_open(port):
            assert time.monotonic() < deadline, ("children outlived the killed launcher",
                                                 procs.port_open(port), [
                _proc_text(p)[:120] for p in processes_mentioning(*needles)])
            time.sleep(0.2)
        output = up.stdout.read()
        assert "w0 exited (-9)" in output and "w0 restarted" in output, output
    finally:
        if up.poll() is None:
            up.kill()
        for pid in processes_mentioning(*needles):
            os.kill(pid, signal.SIGKILL)


def _worker_answers(nats_url: str, worker_id: str, ask) -> bool:  # type: ignore[no-untyped-def]
    import asyncio

    try:
        asyncio.run(ask(nats_url, worker_id))
        return True
    except Exception:
        return False


def _allowed_cpus(pid: int) -> set[int]:
    """The CPUs every thread of `pid` may run on (their union)."""
    from kvmesh.cpu_sets import parse_cpus

    cpus: set[int] = set()
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        with contextlib.suppress(OSError):
            for line in status.read_text().splitlines():
                if line.startswith("Cpus_allowed_list:"):
                    cpus.update(parse_cpus(line.split(":", 1)[1].strip()))
    return cpus


def test_engine_cpus_give_the_engine_its_cpus_and_keep_everything_else_off_them(
        tmp_path: Path) -> None:
    """`kvmesh up --engine-cpus N`: the worker's engine process runs on N alone, and the
    launcher and every other process it started (nats, redis, services) run off N."""
    import pytest
    from openai import OpenAI

    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2:
        pytest.skip("needs two CPUs")
    cpu = usable[-1]
    (port, nats_port, redis_port), mport = free_ports(3, run=6)
    up = subprocess.Popen(
        [sys.executable, "-m", "kvmesh.cli", "up", "--port", str(port),
         "--nats-port", str(nats_port), "--redis-port", str(redis_port),
         "--metrics-port", str(mport), "--state-dir", str(tmp_path), "--engine-cpus", str(cpu)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        cwd=Path(__file__).resolve().parents[2])
    needles = (f"127.0.0.1:{nats_port}", f"-p\0{nats_port}", f"127.0.0.1:{redis_port}")
    try:
        banner = read_banner(up, 180)
        assert f"engine CPUs {cpu};" in banner
        key = next(line.split(": ")[-1] for line in banner.splitlines() if "API key" in line)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
        resp = client.completions.create(model=MODEL, prompt="Hi", max_tokens=3)
        assert resp.choices[0].text is not None

        children = processes_mentioning(*needles)
        engines = [p for p in children if b"spawn_main" in _proc_text(p)
                   and b"KVMESH_WORKER_WORKER_ID=w0" in _proc_text(p)]
        assert len(engines) == 1, [_proc_text(p)[:100] for p in children]
        assert _allowed_cpus(engines[0]) == {cpu}
        others = [p for p in children if p != engines[0]] + [up.pid]
        assert len(others) >= 6  # launcher, nats, redis, router, auth, cache, worker, gateway
        for pid in others:
            assert cpu not in _allowed_cpus(pid), _proc_text(pid)[:120]
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=15)
        except subprocess.TimeoutExpired:
            up.kill()
