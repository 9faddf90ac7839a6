"""Typed configuration of each mesh service, read from `KVMESH_*` environment variables and flags.

One frozen dataclass per service (the worker's, which holds the engine's, lives beside the
worker: `inference/worker_config.py`). Field `foo` of a service whose `SERVICE` is `gateway` is
read, first match wins, from the flag `--foo`, then `KVMESH_GATEWAY_FOO`, then `KVMESH_FOO`, then
the field's default. So `KVMESH_NATS_URL` reaches every service and `KVMESH_GATEWAY_PORT` only the
gateway. A field whose type is itself a frozen dataclass (the worker's `engine`) contributes its
own fields under their own names (`--max-num-batched-tokens`, `KVMESH_WORKER_BLOCK_SIZE`): leaf
names are unique per service. Values are converted to the field's type (bool accepts
1/0/true/false/yes/no); a value that does not convert raises `ConfigError` naming the variable or
flag, and so does one its config refuses (every service config is `Ranged`: `check_ranges`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, Union
from urllib.parse import urlsplit

from kvmesh.cpu_sets import check_exist, parse_groups

C = TypeVar("C")


class ConfigError(ValueError):
    """A setting that does not convert to its field's type, or that its config refuses."""


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
URL_SCHEMES = {"nats_url": ("nats", "tls", "ws", "wss"), "redis_url": ("redis", "rediss", "unix")}
DEFAULT_STATE_DIR = "~/.cache/kvmesh"  # kvmesh up's: logs, locks, the operator's URLs


def check_ranges(cfg: object, positive: frozenset[str] = frozenset(),
                 ratios: frozenset[str] = frozenset()) -> None:
    """Refuse, naming the field, a setting of `cfg` out of its range: every number is finite and
    not negative, those named in `positive` are above zero (a zero timeout, limit or count that
    would fail or stall every request), those in `ratios` at most 1, ports (fields named `port`,
    `*_port`) at most 65535, a `log_level` one of `LOG_LEVELS` (any case), and a NATS or
    Redis URL (`nats_url`, `redis_url`) a URL of its scheme (`URL_SCHEMES`). A nested config
    (the worker's `engine`) is checked the same way, field by field: none of its settings may
    be negative either. Raises ValueError; `from_namespace` reports it as a ConfigError."""
    for f in dataclasses.fields(cfg):  # type: ignore[arg-type]
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check_ranges(value, positive, ratios)
            continue
        if f.name == "log_level" and str(value).upper() not in LOG_LEVELS:
            raise ValueError(f"log_level={value!r}: must be one of {', '.join(LOG_LEVELS)}")
        if f.name in URL_SCHEMES:
            _check_url(f.name, str(value), URL_SCHEMES[f.name])
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{f.name}={value}: must be a finite number, not negative")
        if f.name in positive and value == 0:
            raise ValueError(f"{f.name}=0: must be above 0")
        if f.name in ratios and value > 1:
            raise ValueError(f"{f.name}={value}: a share, at most 1")
        if f.name.endswith("port") and value > 65535:
            raise ValueError(f"{f.name}={value}: must be a port number, at most 65535")


def _check_url(name: str, url: str, schemes: tuple[str, ...]) -> None:
    """A URL of one of `schemes` (its text is not shown: it may hold a password)."""
    if urlsplit(url).scheme not in schemes:
        raise ValueError(f"{name}: must be a URL starting with "
                         f"{' or '.join(s + '://' for s in schemes)}")


ROUTING_POLICIES = ("kv", "least-loaded", "round-robin")  # router/policy.py ranks by each


class Ranged:
    """A service config whose settings `check_ranges` checks on construction; `POSITIVE` names
    the numbers that must be above zero, `RATIOS` those at most 1."""

    POSITIVE: ClassVar[frozenset[str]] = frozenset()
    RATIOS: ClassVar[frozenset[str]] = frozenset()

    def __post_init__(self) -> None:
        check_ranges(self, self.POSITIVE, self.RATIOS)


@dataclass(frozen=True)
class GatewayConfig(Ranged):
    SERVICE: ClassVar[str] = "gateway"
    nats_url: str = "nats://127.0.0.1:4222"
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 1 << 20
    auth: bool = True  # off only for local development: every caller is anonymous
    admin_key: str = ""  # bearer key for /admin/*, besides keys of admin tenants
    auth_timeout: float = 2.0  # seconds for the auth actor to answer
    auth_cache_ttl: float = 5.0  # seconds a verified key is trusted without asking again
    router_timeout: float = 10.0  # seconds for the router to route and a worker to accept
    chunk_timeout: float = 60.0  # seconds with no chunk before the request fails with 504
    stream_write_timeout: float = 30.0  # seconds an SSE write may wait on a non-reading client
    worker_dead_after: float = 3.0  # seconds without a heartbeat before a worker counts as dead
    retry_after: int = 1  # seconds, sent with 503
    grace_period: float = 10.0  # seconds for open requests on SIGTERM
    log_level: str = "INFO"
    result_cache: bool = True  # ask the cache actor for deterministic requests
    cache_lookup_timeout: float = 0.5  # seconds for a plain lookup before treating it as a miss
    cache_lead_wait: float = 60.0  # seconds a request waits for an identical one in flight
    cache_lease_renew: float = 5.0  # seconds between renewals of each single-flight lease held
    # (the cache's `lease` must be longer: a leader that died frees its keys within that)
    cache_route_overlap: bool = True  # route while the lookup runs; drop the route on a hit
    retry_before_first_token: int = 2  # re-routes when a worker dies before its first token
    prompt_batch_window: int = 16  # prompts of one completions batch in flight at once
    processes: int = 1  # gateway processes sharing the port (SO_REUSEPORT); 0 = one per core
    header_timeout: float = 15.0  # seconds a connection may idle, or take to send its headers
    body_timeout: float = 30.0  # seconds a request's body may take to arrive after its headers
    body_reads: int = 32  # bodies one tenant may be sending to a gateway process at once
    metrics_port: int = 0  # 0 = /metrics on the API port (a key needed when auth is on); else here
    metrics_host: str = "127.0.0.1"  # address of the separate /metrics port
    metrics: bool = True  # false: no /metrics anywhere (`kvmesh up --metrics-port 0`)
    metrics_key: str = ""  # bearer key for /metrics on the API port, besides the admin key
    store_timeout: float = 2.0  # seconds for the responses store (the cache actor) to answer
    # Host a router in each gateway process and route through it, not over NATS: one process
    # and one NATS hop fewer before the first token (kvmesh/cli/colocate.py). Its settings are
    # the router's variables (KVMESH_ROUTER_*); `kvmesh up --hosted-router true` turns this on.
    # Slower under load (docs/ARCHITECTURE.md, "A router in the gateway's process").
    colocate_router: bool = False
    # Seconds the event loop polls without sleeping after each message, so the next one finds
    # it running (kvmesh/busy_poll.py): one core while it lasts; 0 = sleep at once.
    busy_poll: float = 0.0
    # Origins whose browser pages may call the API (gateway/cors.py): "" none (no CORS
    # header), "*" any, or a comma-separated list of exact origins.
    cors_origins: str = ""

    POSITIVE: ClassVar[frozenset[str]] = frozenset({"auth_timeout", "router_timeout",
        "chunk_timeout", "stream_write_timeout", "worker_dead_after", "max_body_bytes",
        "prompt_batch_window", "header_timeout", "store_timeout", "cache_lease_renew",
        "body_timeout", "body_reads"})


@dataclass(frozen=True)
class RouterConfig(Ranged):
    SERVICE: ClassVar[str] = "router"
    nats_url: str = "nats://127.0.0.1:4222"
    model: str | None = None  # tokenizer source; None = the default model
    accept_timeout: float = 5.0  # seconds for a worker to accept before trying the next
    worker_dead_after: float = 3.0
    max_attempts: int = 3
    max_concurrency: int = 256
    retry_after: int = 1
    metrics_port: int = 9101  # Prometheus /metrics; 0 = off (docs/OBSERVABILITY.md)
    metrics_host: str = "127.0.0.1"  # address /metrics listens on (compose: 0.0.0.0)
    grace_period: float = 10.0
    log_level: str = "INFO"
    policy: str = "kv"  # one of ROUTING_POLICIES (router/policy.py)
    kv_load_weight: float = 4.0  # kv policy: one queued sequence costs this many prefill blocks
    overload_queue: int = 16  # running + waiting + pending at which a worker is overloaded
    overload_kv_usage: float = 0.95  # KV usage at which a worker is overloaded
    affinity_bonus: float = 8.0  # kv policy: blocks of credit for the session's home worker
    retry_backoff: float = 0.05  # seconds before the 2nd attempt; doubles, with jitter
    breaker_failures: int = 3  # consecutive failures that open a worker's circuit
    breaker_cooldown: float = 5.0  # seconds an open circuit stays open before a trial
    # Prompts (embedding inputs) of fewer characters are tokenized on the router's loop, where
    # a tiny one costs less than a thread hop, and so is one of ordinary size while the router
    # routes nothing else (router/service.py, IDLE_INLINE_CHARS); the rest in a thread (the
    # tokenizer releases the GIL), so the loop routes others meanwhile. At 4096, 256 streams of
    # 150-word prompts waited 14-24 ms to be routed, at 0 under 3 (H200, docs/BENCHMARKS.md,
    # issue 12, nineteenth session).
    inline_tokenize_chars: int = 256
    # Seconds the event loop polls without sleeping after each message, so the next one finds
    # it running (kvmesh/busy_poll.py): one core while it lasts; 0 = sleep at once.
    busy_poll: float = 0.0

    POSITIVE: ClassVar[frozenset[str]] = frozenset({"accept_timeout", "worker_dead_after",
        "max_attempts", "max_concurrency", "overload_queue", "overload_kv_usage",
        "breaker_failures"})
    RATIOS: ClassVar[frozenset[str]] = frozenset({"overload_kv_usage"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.policy not in ROUTING_POLICIES:
            raise ValueError(f"policy={self.policy!r}: must be one of "
                             f"{', '.join(ROUTING_POLICIES)}")


@dataclass(frozen=True)
class CacheConfig(Ranged):
    """The result-cache actor (cache/service.py)."""

    SERVICE: ClassVar[str] = "cache"
    nats_url: str = "nats://127.0.0.1:4222"
    redis_url: str = "redis://127.0.0.1:6379/0"
    ttl: float = 3600.0  # seconds a result stays cached
    lease: float = 15.0  # seconds a single-flight lease lives unless its leader renews it (each
    # gateway renews the leases it holds every `cache_lease_renew`, 5 s): a leader that died
    # lets the requests waiting on it compute within this
    redis_timeout: float = 0.5  # seconds per Redis call; slower counts as down (a miss)
    max_concurrency: int = 256
    grace_period: float = 5.0
    log_level: str = "INFO"
    metrics_port: int = 9104  # Prometheus /metrics; 0 = off
    metrics_host: str = "127.0.0.1"  # address /metrics listens on (compose: 0.0.0.0)
    # the /v1/responses store (cache/responses_store.py)
    responses_ttl: float = 30 * 86400.0  # seconds a stored response lives, unless its tenant
    # sets its own `responses_ttl`
    responses_max_bytes: int = 900_000  # one stored response, encoded (under NATS' 1 MiB)
    responses_tenant_bytes: int = 256 << 20  # one tenant's stored responses; oldest evicted
    # the /v1/conversations store (cache/conversations_store.py)
    conversations_ttl: float = 30 * 86400.0  # seconds a conversation lives after its last
    # change (OpenAI keeps them for good; a store without a bound only grows)
    conversations_max_items: int = 1000  # items in one conversation; more are refused
    conversations_max_bytes: int = 900_000  # one conversation's items and metadata, encoded
    # (its history travels in one NATS message, under 1 MiB)
    conversations_tenant_bytes: int = 256 << 20  # one tenant's conversations; the least
    # recently changed evicted

    POSITIVE: ClassVar[frozenset[str]] = frozenset({"ttl", "lease", "redis_timeout",
        "max_concurrency", "responses_ttl", "responses_max_bytes", "responses_tenant_bytes",
        "conversations_ttl", "conversations_max_items", "conversations_max_bytes",
        "conversations_tenant_bytes"})


@dataclass(frozen=True)
class AuthConfig(Ranged):
    """The auth actor (auth/service.py): keys, tenants and rate limits in Redis."""

    SERVICE: ClassVar[str] = "auth"
    nats_url: str = "nats://127.0.0.1:4222"
    redis_url: str = "redis://127.0.0.1:6379/0"
    rate_window: float = 60.0  # seconds that rpm/tpm limits span ("per minute")
    concurrency_lease: float = 30.0  # seconds a slot is held without a renewal (a lost
    # request's slot frees itself this long after its gateway last renewed it)
    max_concurrency: int = 256
    grace_period: float = 5.0
    log_level: str = "INFO"
    redis_timeout: float = 1.0  # seconds per Redis call; slower counts as Redis down
    fail_open: bool = False  # Redis down: admit without rate limits (True) or refuse with 503
    metrics_port: int = 9103  # Prometheus /metrics; 0 = off
    metrics_host: str = "127.0.0.1"  # address /metrics listens on (compose: 0.0.0.0)

    POSITIVE: ClassVar[frozenset[str]] = frozenset({"rate_window", "concurrency_lease",
        "max_concurrency", "redis_timeout"})


@dataclass(frozen=True)
class LaunchConfig(Ranged):
    """`kvmesh up`: ports of everything it starts, and how many workers."""

    SERVICE: ClassVar[str] = "up"
    port: int = 8000
    host: str = "127.0.0.1"
    nats_port: int = 4222
    redis_port: int = 6379
    workers: int = 1
    tensor_parallel_size: int = 1  # ranks (GPUs) per worker: docs/OPERATIONS.md
    gateways: int = 1  # gateway processes sharing the port (SO_REUSEPORT)
    model: str | None = None
    state_dir: str = DEFAULT_STATE_DIR
    ready_timeout: float = 300.0
    metrics_port: int = 9101  # the router's /metrics, the rest after it (`metrics_ports`); 0 = off
    # True: each gateway process hosts a router (GatewayConfig.colocate_router) in place of the
    # router process, and metrics_port itself stays unused. Off by default: it saves a process
    # but costs TTFT under load (docs/ARCHITECTURE.md, "A router in the gateway's process").
    hosted_router: bool = False
    otlp_endpoint: str = ""  # traces go here (http[s]://host); "" = a Jaeger on :4318 if any
    log_level: str = "INFO"
    # One CPU set per worker ("3,11/4,12"): worker i's engine process runs on set i, and nothing
    # else started here runs on any of them (kvmesh/cpu_sets.py); "" = the OS places everything.
    engine_cpus: str = ""
    # Seconds the gateways, router, workers and engines poll after each message before they
    # sleep (kvmesh/busy_poll.py); None = `busy_poll.default_window`: on for GPU engines where
    # they take at most a quarter of the CPUs.
    busy_poll: float | None = None
    # Seconds each service started here gets to finish open requests on SIGTERM, a worker
    # restarted alone included (a service's own variable, KVMESH_WORKER_GRACE_PERIOD, wins).
    # Short, so Ctrl-C stops the mesh within `grace_period` + 5 s.
    grace_period: float = 5.0

    # Port 0 would let the OS pick the gateway's port (which the launcher never learns) or
    # NATS' and Redis' (which the services would not find): refused, unlike metrics_port 0.
    POSITIVE: ClassVar[frozenset[str]] = frozenset({"workers", "tensor_parallel_size", "gateways",
        "ready_timeout", "port", "nats_port", "redis_port"})

    def __post_init__(self) -> None:
        super().__post_init__()
        last = max(self.metrics_ports().all())
        if last > 65535:
            raise ValueError(f"metrics_port={self.metrics_port}: the services' /metrics take "
                             f"ports {self.metrics_port}..{last} (router, {self.workers} "
                             f"worker(s), auth, cache, {self.gateways} gateway(s)); the last "
                             "must be at most 65535")
        if self.otlp_endpoint and not _is_http_url(self.otlp_endpoint):
            raise ValueError("otlp_endpoint: must be a URL starting with http:// or https://, "
                             "with a host")
        try:
            groups = parse_groups(self.engine_cpus)
            for group in groups:
                check_exist(group)
        except ValueError as exc:  # a ConfigError naming the setting
            raise ValueError(f"engine_cpus: {exc}") from None
        if groups and len(groups) != self.workers:
            raise ValueError(f"engine_cpus: {len(groups)} CPU set(s) for {self.workers} "
                             "worker(s); give one per worker, split by '/'")
        if groups and not all(groups):
            raise ValueError("engine_cpus: a worker's CPU set is empty")
        if groups and self.tensor_parallel_size > 1:
            raise ValueError("engine_cpus: not with tensor_parallel_size > 1")

    def metrics_ports(self) -> MetricsPorts:
        """The /metrics port of each service started here: the router on `metrics_port`, then
        one per worker, auth, cache, one per gateway process; every one 0 (off) when
        `metrics_port` is 0."""
        base, w, g = self.metrics_port, self.workers, self.gateways
        if base == 0:
            return MetricsPorts(0, (0,) * w, 0, 0, (0,) * g)
        return MetricsPorts(router=base, workers=tuple(range(base + 1, base + 1 + w)),
                            auth=base + w + 1, cache=base + w + 2,
                            gateways=tuple(range(base + w + 3, base + w + 3 + g)))


@dataclass(frozen=True)
class MetricsPorts:
    """Where `kvmesh up`'s services serve /metrics (`LaunchConfig.metrics_ports`); 0 = off.
    With `hosted_router` no router process runs and `router` stays unused."""

    router: int
    workers: tuple[int, ...]
    auth: int
    cache: int
    gateways: tuple[int, ...]

    def all(self) -> list[int]:
        return [self.router, *self.workers, self.auth, self.cache, *self.gateways]


def _is_http_url(url: str) -> bool:
    """Whether `url` is an http:// or https:// URL naming a host (an OTLP/HTTP endpoint)."""
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # "http://[::1" and the like
        return False


def load(cls: type[C], argv: Sequence[str] | None = None,
         env: Mapping[str, str] | None = None, prog: str | None = None) -> C:
    """Build `cls` from flags in `argv` (None = no flags), then the environment, then defaults."""
    env = os.environ if env is None else env
    service = getattr(cls, "SERVICE", "")
    parser = argparse.ArgumentParser(prog=prog or f"kvmesh serve {service}")
    add_flags(parser, cls)
    args = parser.parse_args(list(argv or []))
    return from_namespace(cls, args, env)


def flat_fields(cls: type) -> list[tuple[str, Any, Any]]:
    """(name, dataclass field, resolved type) of every leaf setting of `cls`, nested included."""
    hints = typing.get_type_hints(cls)
    out: list[tuple[str, Any, Any]] = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.extend(flat_fields(tp))  # type: ignore[arg-type]
        else:
            out.append((f.name, f, tp))
    return out


def variable_names(cls: type) -> set[str]:
    """Every environment variable `cls` reads: `KVMESH_<SERVICE>_<FIELD>` and the shared form
    `KVMESH_<FIELD>` of each leaf field (nested configs' included)."""
    service = getattr(cls, "SERVICE", "").upper()
    names = set()
    for name, _, _ in flat_fields(cls):
        names |= {f"KVMESH_{service}_{name.upper()}", f"KVMESH_{name.upper()}"}
    return names


def add_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add `--field-name` for each leaf field of `cls` (values stay strings until
    `from_namespace`)."""
    service = getattr(cls, "SERVICE", "")
    for name, f, tp in flat_fields(cls):
        env_name = f"KVMESH_{service.upper()}_{name.upper()}"
        default = f.default if f.default is not dataclasses.MISSING else None
        parser.add_argument("--" + name.replace("_", "-"), dest=name, default=None,
                            help=f"{_type_name(tp)}; env {env_name} or KVMESH_{name.upper()}"
                                 f" (default {default!r})")


def from_namespace(cls: type[C], args: argparse.Namespace, env: Mapping[str, str],
                   service: str | None = None) -> C:
    service = getattr(cls, "SERVICE", "") if service is None else service
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            values[f.name] = from_namespace(tp, args, env, service)  # type: ignore[type-var]
            continue
        sources = [
            (f"--{f.name.replace('_', '-')}", getattr(args, f.name, None)),
            (f"KVMESH_{service.upper()}_{f.name.upper()}",
             env.get(f"KVMESH_{service.upper()}_{f.name.upper()}")),
            (f"KVMESH_{f.name.upper()}", env.get(f"KVMESH_{f.name.upper()}")),
        ]
        for name, raw in sources:
            if raw is not None:
                values[f.name] = _parse(tp, raw, name)
                break
    try:
        return cls(**values)
    except ValueError as exc:  # a config's own range check (__post_init__) names the field
        raise ConfigError(str(exc)) from None


def _parse(tp: Any, raw: str, name: str) -> Any:
    if typing.get_origin(tp) in (Union, types.UnionType):
        if raw.strip().lower() in ("", "none", "null"):
            return None
        (tp,) = [a for a in typing.get_args(tp) if a is not type(None)]
    try:
        if tp is bool:
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError("not a boolean")
        return tp(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r}: expected {_type_name(tp)} ({exc})") from None


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))
