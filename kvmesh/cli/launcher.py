"""`kvmesh up`: the whole mesh on this machine, for development and a first try.

Contract:
- Starts nats-server, redis-server and the five services as child processes (each in its
  own process group, logs under `<state_dir>/logs/`): the auth actor, the result-cache actor
  (both on that Redis), the router, `--workers` inference workers (each of
  `--tensor-parallel-size` ranks) and `--gateways` gateway processes sharing one port
  (SO_REUSEPORT); with `--hosted-router true` each gateway process hosts a router
  (kvmesh/cli/colocate.py) and no router process starts. Waits until the gateway's /ready
  answers 200, then prints the URL with a curl and an openai example.
- NATS runs with a user per service and the permissions compose uses, with fresh passwords
  each run (kvmesh/cli/local_nats.py); the operator's URL is in `<state_dir>/nats-ops.url`.
- Redis requires a fresh password each run (kvmesh/cli/local_redis.py), given to the two
  services that use Redis (auth and cache) in `KVMESH_AUTH_REDIS_URL` and
  `KVMESH_CACHE_REDIS_URL`, and to no other child; the operator's URL is in
  `<state_dir>/redis.url`.
- Creates a development API key (tenant `dev`: every model, admin, no limits) once Redis runs,
  before it waits for /ready (so the key works when /ready says 200); the banner prints it
  once, in the examples, with the model name the workers serve (their served name, else
  their model's).
- Children inherit this process's environment. What kvmesh up adds that must be its own (NATS
  and Redis URLs, worker ids, /metrics ports, `--engine-cpus` sets) wins; what it adds as a
  default (a worker's torch threads, tensor parallel size...) yields to the operator's own
  setting of it (`_start_all`). `--metrics-port 0` turns every service's /metrics off.
- Pulls the default model first when it is missing.
- Ctrl-C (SIGINT) or SIGTERM stops every child within `--grace-period` (default 5 s) + 5 s
  (SIGTERM, each service finishing its open requests within its grace period; then SIGKILL of
  each group), so no process is left behind; a second Ctrl-C or SIGTERM meanwhile is ignored, so
  it cannot cut the stop short. Children get SIGTERM when the launcher dies however it
  dies (kvmesh/cli/parent_death.py), so a killed launcher leaves nothing holding the ports.
- A child that dies on its own is restarted with backoff while the rest serve on
  (kvmesh/cli/supervisor.py); after 3 quick deaths in a row the launcher gives up on it and says
  so with the tail of its log. When it gives up on a service the mesh cannot serve without
  (nats, redis, the router process, auth, every worker or every gateway), everything stops, exit 1.
- `--engine-cpus 3,11` (one set per worker, split by '/'): worker i's engine process runs on
  set i, and every other process started here (the launcher itself included) runs on the
  CPUs left; a set that would leave none is refused (kvmesh/cpu_sets.py says why).
- Only one `kvmesh up` runs per state dir: an exclusive lock on `<state_dir>/up.lock`, which
  the OS releases if we die. A second one says who holds it and exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO

from kvmesh import busy_poll
from kvmesh.cli import local_nats, local_redis, procs
from kvmesh.cli.serve import SERVICES
from kvmesh.cli.supervisor import Supervisor
from kvmesh.cli.variables import warn_unknown
from kvmesh.config import ConfigError, LaunchConfig, add_flags, from_namespace, load
from kvmesh.cpu_sets import parse_groups
from kvmesh.cpu_sets import text as cpu_text
from kvmesh.local_urls import http_url

EXIT_S = 1.5  # after its grace period, how long a service may take to exit before SIGKILL


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived."""


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register `kvmesh up` and `kvmesh serve` on the CLI's subparsers."""
    up = sub.add_parser("up", help="run the whole mesh on this machine")
    add_flags(up, LaunchConfig)
    up.set_defaults(func=_up_command)
    serve = sub.add_parser("serve", help="run one service: gateway, router, worker, auth "
                                         "or cache",
                           description="Run one mesh service in this process.")
    serve.add_argument("service", choices=SERVICES, help="the service to run")
    # Everything after the service is its own: `kvmesh serve worker --help` lists the
    # worker's settings, while `kvmesh serve --help` (before any service) is this usage.
    serve.add_argument("service_args", nargs=argparse.REMAINDER, metavar="...",
                       help="the service's settings (kvmesh serve SERVICE --help lists them)")
    serve.set_defaults(func=_serve)


def _up_command(args: argparse.Namespace) -> int:
    try:
        cfg = from_namespace(LaunchConfig, args, os.environ)
    except ConfigError as exc:  # a bad flag or variable: one line, not a traceback
        print(f"kvmesh up: {exc}", file=sys.stderr)
        return 2
    warn_unknown("kvmesh up")  # a misspelt KVMESH_* variable would change nothing, silently
    return run_up(cfg)


def _serve(args: argparse.Namespace) -> int:
    from kvmesh.cli.serve import main

    return main([args.service, *args.service_args])


@contextlib.contextmanager
def single_instance(state: Path) -> Iterator[None]:
    """Hold `<state>/up.lock` for the block; raise RuntimeError if another process holds it,
    or if `state` cannot hold it (`_unusable`)."""
    path = state / "up.lock"
    try:
        state.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise _unusable(state, exc) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = path.read_text().strip() or "another process"
            raise RuntimeError(f"kvmesh up is already running ({holder}); "
                               f"stop it first (Ctrl-C in its terminal)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}".encode())
        yield
    finally:
        os.close(fd)


def _unusable(state: Path, exc: OSError) -> RuntimeError:
    """The one line for a state dir we cannot make or write in (a file in its place or above
    it, no permission): it names the option, not a traceback."""
    return RuntimeError(f"--state-dir {state}: cannot use it as kvmesh up's directory "
                        f"({exc.strerror or exc})")


def run_up(cfg: LaunchConfig) -> int:
    state = Path(cfg.state_dir).expanduser()
    try:
        try:
            (state / "logs").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _unusable(state, exc) from None
        with single_instance(state):
            return _up(cfg, state)
    except RuntimeError as exc:
        print(f"kvmesh: {exc}", file=sys.stderr)
        return 1


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _on_signal(signum: int, frame: object) -> None:
    _ignore_stop_signals()  # from the first one on: the stop it starts must run to its end
    raise Interrupted(signal.Signals(signum).name)


def _ignore_stop_signals() -> None:
    """Ignore SIGINT and SIGTERM: a second Ctrl-C, or a SIGTERM after a Ctrl-C, while the
    mesh stops would otherwise raise `Interrupted` inside `_stop_all` and leave children
    running, never SIGKILLed."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def _up(cfg: LaunchConfig, state: Path) -> int:
    for name, port in (("gateway", cfg.port), ("nats", cfg.nats_port),
                       ("redis", cfg.redis_port)):
        if procs.port_open(port):
            raise RuntimeError(f"port {port} ({name}) is already in use; pick another with "
                               f"--{'port' if name == 'gateway' else name + '-port'}")
    if cfg.model is None:
        from inference.engine.model_store import pull_default_model

        pull_default_model()
    logs = state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    sup = Supervisor()
    old = {s: signal.signal(s, _on_signal) for s in STOP_SIGNALS}
    try:
        started = _start_all(cfg, logs, sup)
        key = _dev_key(started.redis_url)  # before the gateway can say it is ready: it works then
        url = http_url(cfg.host, cfg.port)
        _wait_ready(url, cfg.ready_timeout, sup, logs)
        print(_banner(url, cfg, key, _model_name(started.worker_env)), flush=True)
        while True:
            time.sleep(0.5)
            _report(sup, logs)
    except Interrupted:
        print("\nkvmesh: stopping...", file=sys.stderr, flush=True)
        return 0
    except (RuntimeError, TimeoutError) as exc:
        print(f"kvmesh: {exc}", file=sys.stderr)
        return 1
    finally:
        _ignore_stop_signals()  # stopping after an error: no signal may cut it short either
        _stop_all(sup.children, cfg.grace_period)
        for s, handler in old.items():
            signal.signal(s, handler)


def _report(sup: Supervisor, logs: Path) -> None:
    """Restart what died, print what happened; RuntimeError when the mesh cannot serve."""
    for event in sup.poll():
        tail = "\n" + _tail(logs / f"{event.name}.log") if event.what == "gave_up" else ""
        print(f"{event}{tail}", file=sys.stderr, flush=True)
    lost = sup.essential_lost()
    if lost is not None:
        raise RuntimeError(f"gave up on {lost}; the mesh cannot serve without it. Stopping.")


@dataclass(frozen=True)
class Started:
    """What `_start_all` started the mesh with: the Redis URL its services use (password
    included) and the variables worker w0 got on top of this process's environment."""

    redis_url: str
    worker_env: dict[str, str]


def _start_all(cfg: LaunchConfig, logs: Path, sup: Supervisor) -> Started:
    """Add every child to `sup`.

    Each child gets this process's environment plus variables of ours. Some are ours alone
    and always win: the NATS and Redis URLs (this mesh's; Redis's to auth and cache alone),
    a worker's id and every /metrics port (unique per process), a gateway's --host/--port,
    the engines' CPU sets that `--engine-cpus` placed. The rest are defaults (`_unless_set`):
    a setting the operator made for the service wins over them."""
    engine_cpus = _place_engines(cfg)  # first: every child inherits where it may run
    nats = local_nats.prepare(logs.parent, cfg.nats_port)
    redis = local_redis.prepare(logs.parent, cfg.redis_port)
    ports = cfg.metrics_ports()
    # For every service: kvmesh up's own settings in their shared form, which a service's own
    # variable (read first: KVMESH_WORKER_GRACE_PERIOD) overrides
    env = {"KVMESH_LOG_LEVEL": cfg.log_level, "KVMESH_GRACE_PERIOD": str(cfg.grace_period),
           **_unless_set("", {"metrics_host": cfg.host}, os.environ)}
    if cfg.model is not None:
        env["KVMESH_MODEL"] = cfg.model
    from kvmesh.cli.telemetry_env import telemetry_env

    tel_env, where = telemetry_env(cfg.otlp_endpoint, ports.router)
    env.update(tel_env)
    print(where, flush=True)
    env["KVMESH_BUSY_POLL"] = str(_busy_poll(cfg))

    def log(name: str) -> IO[bytes]:
        return open(logs / f"{name}.log", "ab")  # appended across restarts

    def service(name: str, argv: list[str], extra: dict[str, str] | None = None) -> dict[str, str]:
        role = argv[argv.index("kvmesh.cli.serve") + 1]  # the service: its NATS user
        own = {**env, f"KVMESH_{role.upper()}_NATS_URL": nats.url(role), **(extra or {})}
        sup.add(name, lambda: procs.start(name, argv, own, log(name), die_with_parent=True))
        return own

    sup.add("nats", lambda: procs.start_nats(cfg.nats_port, log("nats"), True,
                                             str(nats.config), nats.server_env()))
    sup.add("redis", lambda: procs.start_redis(cfg.redis_port, str(logs), log("redis"),
                                               die_with_parent=True, config=str(redis.config)))
    hosted: dict[str, str] = {}
    if cfg.hosted_router:  # the router each gateway process hosts uses the router's NATS user
        hosted = {"KVMESH_GATEWAY_COLOCATE_ROUTER": "1",
                  "KVMESH_ROUTER_NATS_URL": nats.url("router")}
    else:
        service("router", procs.service_argv("router"))
    # Redis's password goes to the two services that use it, and to no other process
    service("auth", procs.service_argv("auth"), {"KVMESH_AUTH_METRICS_PORT": str(ports.auth),
                                                 "KVMESH_AUTH_REDIS_URL": redis.url()})
    service("cache", procs.service_argv("cache"),
            {"KVMESH_CACHE_METRICS_PORT": str(ports.cache), "KVMESH_CACHE_REDIS_URL": redis.url()})
    workers = [service(f"w{i}", procs.service_argv("worker"),
                       _worker_env(cfg, i, engine_cpus, port, os.environ))
               for i, port in enumerate(ports.workers)]
    for i, port in enumerate(ports.gateways):
        service("gateway" if cfg.gateways <= 1 else f"gateway{i}", procs.service_argv(
            "gateway", "--host", cfg.host, "--port", str(cfg.port)),
            {"KVMESH_GATEWAY_METRICS_PORT": str(port),  # 0 would put it on the API port
             "KVMESH_GATEWAY_METRICS": str(bool(port)).lower(), **hosted})
    return Started(redis.url(), workers[0])


def _worker_env(cfg: LaunchConfig, i: int, engine_cpus: list[str], metrics_port: int,
                environ: Mapping[str, str]) -> dict[str, str]:
    """Worker i's own variables. Its id and /metrics port are ours (unique per process), and so
    is its engine's CPU set when `--engine-cpus` placed it (everything else was moved off
    it); its torch threads (the CPUs shared out among the workers), tensor parallel size and,
    without `--engine-cpus`, CPU set (any) are defaults the operator's settings override."""
    tunables = {"torch_threads": str(max(1, (os.cpu_count() or 1) // cfg.workers)),
                "tensor_parallel_size": str(cfg.tensor_parallel_size)}
    own = {"KVMESH_WORKER_WORKER_ID": f"w{i}", "KVMESH_WORKER_METRICS_PORT": str(metrics_port)}
    if engine_cpus:
        own["KVMESH_WORKER_ENGINE_CPUS"] = engine_cpus[i]
    else:
        tunables["engine_cpus"] = ""
    return {**_unless_set("worker", tunables, environ), **own}


def _unless_set(service: str, defaults: Mapping[str, str],
                environ: Mapping[str, str]) -> dict[str, str]:
    """`KVMESH_<SERVICE>_<FIELD>=value` (`KVMESH_<FIELD>` for service "") for each field and
    value of `defaults`, but none where the operator set the field in `environ`: that very
    variable, or the shared form `KVMESH_<FIELD>` of a field kvmesh up has none of (the shared
    form of one it has, like `tensor_parallel_size`, set kvmesh up's own and so the value
    given here already)."""
    ours = {f.name for f in fields(LaunchConfig)}
    out: dict[str, str] = {}
    for name, value in defaults.items():
        variable = f"KVMESH_{service.upper()}_{name.upper()}" if service else \
            f"KVMESH_{name.upper()}"
        shared = f"KVMESH_{name.upper()}"
        if variable in environ or (shared in environ and name not in ours):
            continue
        out[variable] = value
    return out


def _place_engines(cfg: LaunchConfig) -> list[str]:
    """Move this process, and so every child it starts from now on, off the engines' CPUs;
    answer each worker's set as text ([] when `--engine-cpus` is not given)."""
    groups = parse_groups(cfg.engine_cpus)
    if not groups:
        return []
    reserved = {cpu for group in groups for cpu in group}
    rest = os.sched_getaffinity(0) - reserved
    if not rest:
        raise RuntimeError(f"--engine-cpus {cfg.engine_cpus} leaves no CPU for the other "
                           "processes")
    os.sched_setaffinity(0, rest)
    print(f"kvmesh: engine CPUs {cfg.engine_cpus}; everything else on {cpu_text(rest)}",
          flush=True)
    return [cpu_text(group) for group in groups]


def _busy_poll(cfg: LaunchConfig) -> float:
    """The services' polling window: the one given, else the default for the CPUs this process
    (and so every service it starts) may run on, the processes that would poll (the gateways,
    the router unless they host it, each worker and its engine) and the engines' device."""
    cpus = len(os.sched_getaffinity(0))
    pollers = max(1, cfg.gateways) + (0 if cfg.hosted_router else 1) + 2 * cfg.workers
    window = cfg.busy_poll
    if window is None:
        spare = cpus >= busy_poll.CPUS_PER_POLLER * pollers
        window = busy_poll.default_window(cpus, pollers, spare and _engines_on_gpu())
    print(f"kvmesh: services poll {window:g} s after each message before they sleep "
          f"({cpus} CPUs, {pollers} processes that poll; --busy-poll sets it, 0 = off)",
          flush=True)
    return window


def _engines_on_gpu() -> bool:
    """Whether the workers' engines will run on a GPU: as their device setting says (read as
    a worker reads it), else as torch, asked in a child process with the workers' environment,
    finds one (the launcher itself keeps no torch)."""
    from inference.worker_config import WorkerConfig

    device = load(WorkerConfig).engine.device
    if device != "auto":
        return device.startswith("cuda")
    try:
        probe = subprocess.run([sys.executable, "-c",
                                "import torch; print(torch.cuda.is_available())"],
                               capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.stdout.strip() == "True"


def _wait_ready(url: str, timeout: float, sup: Supervisor, logs: Path) -> None:
    print(f"kvmesh: starting (logs in {logs}) ...", flush=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _report(sup, logs)
        with contextlib.suppress(urllib.error.URLError, OSError), \
                urllib.request.urlopen(url + "/ready", timeout=2) as resp:
            if resp.status == 200:
                return
        time.sleep(0.3)
    raise TimeoutError(f"the mesh was not ready within {timeout:g}s; logs in {logs}")


def _stop_all(children: list[procs.Child], grace_period: float) -> None:
    """Stop services first (in parallel, each given `grace_period` to finish its open
    requests: one given longer by its own variable is killed then), then redis and nats;
    each group ends up killed."""
    services = [c for c in children if c.name not in ("nats", "redis")]
    infra = [c for c in children if c.name in ("nats", "redis")]
    for group, budget in ((services, grace_period + EXIT_S), (infra, 1.0)):
        for c in group:
            if c.alive:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(c.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + budget
        while any(c.alive for c in group) and time.monotonic() < deadline:
            time.sleep(0.05)
        for c in group:
            c.stop(timeout=0.0, sig=signal.SIGKILL)


def _tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def _dev_key(redis_url: str) -> str:
    """A fresh key of the development tenant `dev` (every model, admin, no limits)."""
    import asyncio

    from auth.cli import create_key

    plain, _ = asyncio.run(create_key(redis_url, {
        "name": "dev", "models": ["*"], "admin": True}, "kvmesh up"))
    return plain


def _model_name(worker_env: Mapping[str, str]) -> str:
    """The model name a worker serves, read from its config as it reads it: this process's
    environment with `worker_env` over it (its served name, else its model's)."""
    from inference.worker import served_name
    from inference.worker_config import WorkerConfig

    worker = load(WorkerConfig, env={**os.environ, **worker_env})
    return worker.served_name or served_name(worker.model)


def _metrics_line(cfg: LaunchConfig) -> str:
    """Where the banner says each service's /metrics is."""
    ports = cfg.metrics_ports()
    if ports.router == 0:
        return "metrics: off (--metrics-port 0)"
    router = "(in the gateways)" if cfg.hosted_router else f":{ports.router}/metrics"
    return (f"metrics (on {cfg.host}): gateways :{_span(ports.gateways)}/metrics, router "
            f"{router}, workers :{_span(ports.workers)}/metrics, auth :{ports.auth}/metrics, "
            f"cache :{ports.cache}/metrics")


def _span(ports: tuple[int, ...]) -> str:
    return f"{ports[0]}..{ports[-1]}"


def _banner(url: str, cfg: LaunchConfig, key: str, model: str) -> str:
    return f"""
kvmesh is up: {url}  ({cfg.workers} worker(s), {cfg.gateways} gateway(s), model {model})

  API key (tenant 'dev', admin; shown once): {key}

  curl {url}/v1/chat/completions -H 'Content-Type: application/json' \\
    -H 'Authorization: Bearer {key}' \\
    -d '{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello!"}}]}}'

  python -c "from openai import OpenAI
c = OpenAI(base_url='{url}/v1', api_key='{key}')
r = c.chat.completions.create(model='{model}', messages=[{{'role': 'user', 'content': 'Hello!'}}])
print(r.choices[0].message.content)"

  {_metrics_line(cfg)}

  operator NATS URL (kvmesh keys --nats-url, stats): {Path(cfg.state_dir).expanduser()}/nats-ops.url
  operator Redis URL (kvmesh keys --redis-url): {Path(cfg.state_dir).expanduser()}/redis.url

Ctrl-C stops everything.
"""
