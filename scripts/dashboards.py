"""Write kvmesh's Grafana dashboards: `python scripts/dashboards.py` (re)writes
deploy/grafana/dashboards/*.json, which compose's `monitoring` profile provisions.

The JSON is what Grafana loads and what is versioned; this file is how it is written, so a
panel is one line here. tests/unit/test_compose_static.py checks that the committed JSON is
what this writes and that every query names a metric kvmesh exports (docs/OBSERVABILITY.md).
Bump `VERSION` when a dashboard changes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "dashboards"
VERSION = 1
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}  # deploy/grafana/provisioning


def q(expr: str, legend: str = "") -> dict[str, str]:
    return {"expr": expr, "legendFormat": legend}


def pct(metric: str, by: str, quantiles: tuple[float, ...] = (0.5, 0.95, 0.99)) -> list[dict]:
    """p50/p95/p99 of a histogram, summed over everything but `by`."""
    group = f"le, {by}" if by else "le"
    rate = f"sum by ({group}) (rate({metric}_bucket[$__rate_interval]))"
    return [q(f"histogram_quantile({p}, {rate})", f"p{int(p * 100)}" + (f" {{{{{by}}}}}" if by
                                                                         else ""))
            for p in quantiles]


def panel(title: str, targets: list[dict[str, str]], unit: str = "short",
          description: str = "", stack: bool = False) -> dict[str, Any]:
    custom = {"stacking": {"mode": "normal"}, "fillOpacity": 30} if stack else {}
    return {
        "type": "timeseries", "title": title, "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit, "custom": custom}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"},
                    "tooltip": {"mode": "multi"}},
        "targets": [{"refId": chr(65 + i), "datasource": DATASOURCE, **t}
                    for i, t in enumerate(targets)],
    }


def dashboard(uid: str, title: str, description: str,
              panels: list[dict[str, Any]]) -> dict[str, Any]:
    """Panels two to a row, 8 high."""
    for i, p in enumerate(panels):
        p["id"] = i + 1
        p["gridPos"] = {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)}
    return {
        "uid": uid, "title": title, "description": description, "tags": ["kvmesh"],
        "schemaVersion": 39, "version": VERSION, "editable": True, "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"}, "timezone": "",
        "templating": {"list": []}, "annotations": {"list": []}, "panels": panels,
    }


RI = "[$__rate_interval]"


def overview() -> dict[str, Any]:
    req = "kvmesh_gateway_requests_total"
    return dashboard("kvmesh-overview", "kvmesh / Overview",
                     "What clients see, at the gateways: traffic, errors, latency, caching.", [
        panel("Requests by status", [q(f"sum by (status) (rate({req}{RI}))", "{{status}}")],
              "reqps", stack=True),
        panel("5xx ratio", [q("kvmesh:gateway_error_ratio:rate5m", "5xx / all")], "percentunit",
              "Recording rule of deploy/prometheus/alerts.yml; KvmeshHighErrorRatio at 5%."),
        panel("Requests by tenant", [q(f"sum by (tenant) (rate({req}{RI}))", "{{tenant}}")],
              "reqps", stack=True),
        panel("Rate-limit refusals by tenant", [
            q(f"sum by (tenant, limit) (rate(kvmesh_auth_rate_limited_total{RI}))",
              "{{tenant}} ({{limit}})")], "reqps",
              "429s from auth, by the limit that refused (requests, tokens, concurrency)."),
        panel("Tenant headroom", [
            q("min by (tenant, limit) (kvmesh_auth_tenant_headroom_ratio)",
              "{{tenant}} ({{limit}})")], "percentunit",
              "Share of each tenant limit left at the tenant's last admission (0: refused)."),
        panel("Time to first token (gateway)",
              pct("kvmesh_gateway_time_to_first_token_seconds", ""), "s"),
        panel("Inter-token latency (gateway)",
              pct("kvmesh_gateway_inter_token_latency_seconds", ""), "s"),
        panel("End-to-end latency by route",
              pct("kvmesh_gateway_e2e_request_latency_seconds", "route", (0.5, 0.95)), "s"),
        panel("Tokens per second", [
            q(f"sum(rate(kvmesh_gateway_prompt_tokens_total{RI}))", "prompt"),
            q(f"sum(rate(kvmesh_gateway_generation_tokens_total{RI}))", "generated")]),
        panel("Result-cache hit rate", [
            q(f'sum(rate(kvmesh_gateway_result_cache_lookups_total{{result="hit"}}{RI})) / '
              f"sum(rate(kvmesh_gateway_result_cache_lookups_total{RI}))", "hits / lookups")],
              "percentunit", "Deterministic requests answered from Redis without a worker."),
        panel("Requests in flight", [q("sum(kvmesh_gateway_requests_in_flight)", "in flight")]),
    ])


def workers() -> dict[str, Any]:
    by = "sum by (instance)"
    return dashboard("kvmesh-workers", "kvmesh / Workers",
                     "Each inference worker (one line per scrape target): queues, KV cache, "
                     "prefix reuse, throughput, engine latency.", [
        panel("Running sequences", [q(f"{by} (kvmesh_worker_num_requests_running)",
                                      "{{instance}}")]),
        panel("Waiting sequences", [q(f"{by} (kvmesh_worker_num_requests_waiting)",
                                      "{{instance}}")]),
        panel("KV cache usage", [q(f"{by} (kvmesh_worker_kv_cache_usage_ratio)",
                                   "{{instance}}")], "percentunit",
              "Used / all KV blocks. KvmeshKVCachePressure: above 95% while preempting."),
        panel("Prefix-cache hit rate", [
            q(f"{by} (rate(kvmesh_worker_prefix_cache_hit_tokens_total{RI})) / "
              f"{by} (rate(kvmesh_worker_prefix_cache_query_tokens_total{RI}))",
              "{{instance}}")], "percentunit",
              "Prompt tokens found in cached KV blocks / prompt tokens looked up."),
        panel("Generated tokens per second", [
            q(f"{by} (rate(kvmesh_worker_generation_tokens_total{RI}))", "{{instance}}")]),
        panel("Prompt tokens per second", [
            q(f"{by} (rate(kvmesh_worker_prompt_tokens_total{RI}))", "{{instance}}")]),
        panel("Queue time (p95)", pct("kvmesh_worker_queue_time_seconds", "instance", (0.95,)),
              "s", "Admission to the first engine step that scheduled the request."),
        panel("Time to first token (worker, p95)",
              pct("kvmesh_worker_time_to_first_token_seconds", "instance", (0.95,)), "s"),
        panel("Engine step time (p50, p95)",
              pct("kvmesh_worker_engine_step_seconds", "", (0.5, 0.95)), "s"),
        panel("Preemptions per second", [
            q(f"{by} (rate(kvmesh_worker_preemptions_total{RI}))", "{{instance}}")]),
    ])


def routing() -> dict[str, Any]:
    return dashboard("kvmesh-routing", "kvmesh / Routing",
                     "Router decisions and the mesh's plumbing: why a worker was chosen, "
                     "predicted against actual prefix reuse, retries, NATS and Redis.", [
        panel("Decisions by reason", [
            q(f"sum by (reason) (rate(kvmesh_router_decisions_total{RI}))", "{{reason}}")],
              "reqps", "prefix_hit: the chosen worker held part of the prompt; no_prefix: "
              "chosen for load; after_retry: the first choice refused.", stack=True),
        panel("Prefix hit rate: predicted vs actual", [
            q(f"sum(rate(kvmesh_router_predicted_prefix_tokens_total{RI})) / "
              f"sum(rate(kvmesh_router_routed_prompt_tokens_total{RI}))", "predicted (router)"),
            q(f"sum(rate(kvmesh_worker_prefix_cache_hit_tokens_total{RI})) / "
              f"sum(rate(kvmesh_worker_prefix_cache_query_tokens_total{RI}))",
              "actual (workers)")], "percentunit",
              "What the router expected the chosen workers to hold, against what they "
              "found. A gap means the routers' KV index is stale."),
        panel("Live workers (per router)", [q("kvmesh_router_live_workers", "{{instance}}")]),
        panel("Routing outcomes", [
            q(f"sum by (status) (rate(kvmesh_router_requests_total{RI}))", "{{status}}"),
            q(f"sum(rate(kvmesh_router_retries_total{RI}))", "retries")], "reqps"),
        panel("Route latency (p50, p95)",
              pct("kvmesh_router_route_latency_seconds", "", (0.5, 0.95)), "s",
              "Arrival at the router to a worker's acceptance."),
        panel("NATS and Redis up", [q('probe_success{job=~"nats|redis"}', "{{job}}")],
              "short", "Blackbox probes: NATS /healthz, Redis PING (1 = up)."),
    ])


DASHBOARDS = {"kvmesh-overview.json": overview, "kvmesh-workers.json": workers,
              "kvmesh-routing.json": routing}


def render() -> dict[str, str]:
    """File name -> JSON text, as committed."""
    return {name: json.dumps(make(), indent=2) + "\n" for name, make in DASHBOARDS.items()}


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
