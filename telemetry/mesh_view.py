"""What `kvmesh top` shows: a running mesh seen through its workers' heartbeats (NATS) and
every `/metrics` endpoint it can reach, as text tables.

Contract:
- `Endpoint(url)` is one /metrics URL. `scrape()` fetches it (short timeout; a dead endpoint
  is marked down, never raises) and keeps the previous scrape, so `rate(name, **labels)` is
  the per-second increase between the last two scrapes (None until there are two). The
  endpoint names its own service and instance through `kvmesh_service_info`.
- `MeshView` holds the endpoints and the last heartbeat of each worker (`beat(hb, now)`).
  `render(now, width)` returns the screen as lines: workers (model, state, running/waiting, KV
  usage, tokens/s, prefix-cache hit rate over the last interval), gateways, routers, tenants
  (requests/s, tokens/s, refusals/s; the least headroom among its limits at its last
  admission; AT LIMIT with the limit when it was refused in the last interval, NEAR LIMIT when
  it sent requests with under 20% of a limit left), and endpoints that do not answer.
- Endpoints marked `optional` (ports scanned for `kvmesh up`'s services) are listed as not
  answering only once they have answered.
- A worker is joined to its endpoint by `kvmesh_service_info{instance}` = its worker id; a
  worker with heartbeats but no reachable endpoint shows `-` for what only metrics know.
"""

from __future__ import annotations

import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from kvmesh.local_urls import http_url
from kvmesh.wire import Heartbeat

Labels = tuple[tuple[str, str], ...]
Samples = dict[str, dict[Labels, float]]  # sample name -> sorted labels -> value
NEAR_LIMIT = 0.2  # a tenant with less than this share of a limit left is near it
ROUTER_SERIES = "kvmesh_router_live_workers"  # every started router reports it
STALE_AFTER_S = 3.0  # a heartbeat older than this: the worker counts as gone (router default)


def parse(text: str) -> Samples:
    out: Samples = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name][tuple(sorted(s.labels.items()))] = s.value
    return out


def _matches(labels: Labels, want: dict[str, str]) -> bool:
    have = dict(labels)
    return all(have.get(k) == v for k, v in want.items())


@dataclass
class Endpoint:
    url: str
    optional: bool = False  # a scanned port: not listed as down unless it ever answered
    service: str = ""
    instance: str = ""
    up: bool = False
    now: Samples = field(default_factory=dict)
    prev: Samples = field(default_factory=dict)
    t_now: float = 0.0
    t_prev: float = 0.0

    def scrape(self, timeout: float = 0.5) -> None:
        try:
            with urllib.request.urlopen(self.url, timeout=timeout) as resp:
                samples = parse(resp.read().decode())
        except (OSError, ValueError):
            self.up = False
            return
        self.prev, self.t_prev = self.now, self.t_now
        self.now, self.t_now, self.up = samples, time.monotonic(), True
        for labels in samples.get("kvmesh_service_info", {}):
            info = dict(labels)
            self.service, self.instance = info.get("service", ""), info.get("instance", "")

    def total(self, name: str, **labels: str) -> float:
        return sum(v for k, v in self.now.get(name, {}).items() if _matches(k, labels))

    def rate(self, name: str, **labels: str) -> float | None:
        if not self.prev or self.t_now <= self.t_prev:
            return None
        before = sum(v for k, v in self.prev.get(name, {}).items() if _matches(k, labels))
        return max(0.0, self.total(name, **labels) - before) / (self.t_now - self.t_prev)

    def label_values(self, name: str, label: str) -> set[str]:
        return {dict(k).get(label, "") for k in self.now.get(name, {})}


def _num(v: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


@dataclass
class MeshView:
    endpoints: list[Endpoint]
    beats: dict[str, tuple[Heartbeat, float]] = field(default_factory=dict)
    nats: str = "connecting"

    def beat(self, hb: Heartbeat, now: float) -> None:
        self.beats[hb.worker_id] = (hb, now)

    def scrape(self) -> None:
        for e in self.endpoints:
            e.scrape()

    def _of(self, service: str) -> list[Endpoint]:
        return [e for e in self.endpoints if e.up and e.service == service]

    def render(self, now: float, width: int = 100) -> list[str]:
        up = [e for e in self.endpoints if e.up]
        lines = [f"kvmesh top {time.strftime('%H:%M:%S')} (q quits)  /metrics up: {len(up)}  "
                 f"NATS: {self.nats}", ""]
        lines += [*self._workers(now), "", *self._gateways(), "", *self._routers(), "",
                  *self._tenants()]
        down = [e.url for e in self.endpoints if not e.up and (e.t_now or not e.optional)]
        if down:
            lines += ["", "not answering: " + " ".join(down)]
        return [ln[:width] for ln in lines]

    def _workers(self, now: float) -> list[str]:
        rows = [f"{'WORKER':<14}{'MODEL':<26}{'STATE':<9}{'RUN':>5}{'WAIT':>6}{'KV':>6}"
                f"{'TOK/S':>8}{'PREFIX':>8}{'BEAT':>7}"]
        by_id = {e.instance: e for e in self._of("worker")}
        for wid in sorted(set(self.beats) | set(by_id)):
            e = by_id.get(wid)
            hb, seen = self.beats.get(wid, (None, None))
            if hb is not None:
                age = now - seen
                state = "draining" if hb.draining else ("gone" if age > STALE_AFTER_S else "ok")
                model, run, wait, kv = hb.model, str(hb.running), str(hb.waiting), hb.kv_usage
                beat = f"{age:.1f}s"
            else:
                model = next(iter(e.label_values("kvmesh_worker_num_requests_running",
                                                 "model")), "?")
                state, beat = "no beat", "-"
                run = _num(e.total("kvmesh_worker_num_requests_running"), "{:.0f}")
                wait = _num(e.total("kvmesh_worker_num_requests_waiting"), "{:.0f}")
                kv = e.total("kvmesh_worker_kv_cache_usage_ratio")
            tok = hit = None
            if e is not None:
                tok = e.rate("kvmesh_worker_generation_tokens_total")
                hit = _ratio(e.rate("kvmesh_worker_prefix_cache_hit_tokens_total"),
                             e.rate("kvmesh_worker_prefix_cache_query_tokens_total"))
            rows.append(f"{wid:<14}{model[:25]:<26}{state:<9}{run:>5}{wait:>6}{_pct(kv):>6}"
                        f"{_num(tok):>8}{_pct(hit):>8}{beat:>7}")
        if len(rows) == 1:
            rows.append("(no worker heartbeats or worker endpoints yet)")
        return rows

    def _gateways(self) -> list[str]:
        rows = [f"{'GATEWAY':<32}{'REQ/S':>8}{'5XX/S':>8}{'IN FLIGHT':>11}{'RESULT HIT':>12}"]
        for e in self._of("gateway"):
            req = e.rate("kvmesh_gateway_requests_total")
            err = None if req is None else sum(
                e.rate("kvmesh_gateway_requests_total", status=s) or 0.0
                for s in e.label_values("kvmesh_gateway_requests_total", "status")
                if s.startswith("5"))
            hit = e.total("kvmesh_gateway_result_cache_hit_ratio")
            rows.append(f"{e.instance[:31]:<32}{_num(req):>8}{_num(err):>8}"
                        f"{e.total('kvmesh_gateway_requests_in_flight'):>11.0f}{_pct(hit):>12}")
        return rows

    def _routers(self) -> list[str]:
        rows = [f"{'ROUTER':<32}{'LIVE WORKERS':>13}{'REQ/S':>8}{'RETRIES/S':>11}"]
        # A gateway process that hosts a router (GatewayConfig.colocate_router) has its series;
        # its row is named `<gateway instance>/router`.
        for e in [e for e in self.endpoints if e.up and ROUTER_SERIES in e.now]:
            name = e.instance if e.service == "router" else f"{e.instance}/router"
            rows.append(f"{name[:31]:<32}{e.total(ROUTER_SERIES):>13.0f}"
                        f"{_num(e.rate('kvmesh_router_requests_total')):>8}"
                        f"{_num(e.rate('kvmesh_router_retries_total')):>11}")
        return rows

    def _tenants(self) -> list[str]:
        req: dict[str, float] = defaultdict(float)
        tok: dict[str, float] = defaultdict(float)
        refused: dict[str, float] = defaultdict(float)
        limits: dict[str, set[str]] = defaultdict(set)
        left: dict[str, tuple[float, str]] = {}  # tenant -> (least headroom, of which limit)
        for e in self._of("gateway"):
            for t in e.label_values("kvmesh_gateway_requests_total", "tenant"):
                req[t] += e.rate("kvmesh_gateway_requests_total", tenant=t) or 0.0
                tok[t] += e.rate("kvmesh_gateway_generation_tokens_total", tenant=t) or 0.0
        for e in self._of("auth"):
            for labels in e.now.get("kvmesh_auth_rate_limited_total", {}):
                t, limit = dict(labels)["tenant"], dict(labels)["limit"]
                r = e.rate("kvmesh_auth_rate_limited_total", tenant=t, limit=limit) or 0.0
                refused[t] += r
                if r > 0:
                    limits[t].add(limit)
            for labels, value in e.now.get("kvmesh_auth_tenant_headroom_ratio", {}).items():
                t, limit = dict(labels)["tenant"], dict(labels)["limit"]
                if t not in left or value < left[t][0]:
                    left[t] = (value, limit)
        rows = [f"{'TENANT':<24}{'REQ/S':>8}{'TOK/S':>8}{'429/S':>8}  {'HEADROOM':<18}LIMITS"]
        for t in sorted(set(req) | set(refused), key=lambda t: (-refused[t], -req[t], t)):
            room = f"{left[t][1]} {100 * left[t][0]:.0f}%" if t in left else "-"
            if limits[t]:
                flag = "AT LIMIT (" + ", ".join(sorted(limits[t])) + ")"
            elif t in left and left[t][0] < NEAR_LIMIT and req[t] > 0:
                flag = "NEAR LIMIT"
            else:
                flag = ""
            rows.append(f"{(t or '(no auth)')[:23]:<24}{req[t]:>8.1f}{tok[t]:>8.1f}"
                        f"{refused[t]:>8.1f}  {room:<18}{flag}")
        return rows


def local_endpoints(host: str, gateway_port: int, first: int, last: int) -> list[Endpoint]:
    """The gateway's /metrics and every port in [first, last] (`kvmesh up` puts the router,
    the workers, auth, cache and each gateway process on consecutive ports from
    `--metrics-port`; a router a gateway hosts, with `--hosted-router true`, reports on its
    gateway's). All optional: a gateway with its own metrics port has none on the API port."""
    return [Endpoint(http_url(host, gateway_port) + "/metrics", optional=True)] + [
        Endpoint(http_url(host, p) + "/metrics", optional=True) for p in range(first, last + 1)]

