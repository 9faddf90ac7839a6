"""What `kvmesh top` computes from two scrapes and the heartbeats: rates over the interval, a
worker joined to its endpoint by id, stale and draining workers, tenants at their limits, and
routers wherever they run (their own process, or a gateway process that hosts one)."""

from __future__ import annotations

from kvmesh.wire import Heartbeat
from telemetry.mesh_view import Endpoint, MeshView, parse

WORKER = """
kvmesh_service_info{{service="worker",instance="w7"}} 1
kvmesh_worker_generation_tokens_total{{model="m"}} {gen}
kvmesh_worker_prefix_cache_hit_tokens_total{{model="m"}} {hit}
kvmesh_worker_prefix_cache_query_tokens_total{{model="m"}} {query}
"""
GATEWAY = """
kvmesh_service_info{{service="gateway",instance="gateway-8000-1"}} 1
kvmesh_gateway_requests_total{{route="/v1/completions",status="200",model="m",tenant="acme"}} {ok}
kvmesh_gateway_requests_total{{route="/v1/completions",status="503",model="m",tenant="acme"}} {err}
kvmesh_gateway_requests_total{{route="/v1/completions",status="200",model="m",tenant="globex"}} {ok}
kvmesh_gateway_requests_in_flight 3
"""
ROUTER = """
kvmesh_service_info{{service="{service}",instance="{service}-1"}} 1
kvmesh_router_live_workers 2
kvmesh_router_requests_total{{model="m",outcome="accepted"}} {n}
"""
AUTH = """
kvmesh_service_info{{service="auth",instance="auth-1"}} 1
kvmesh_auth_rate_limited_total{{tenant="acme",limit="tokens"}} {refused}
kvmesh_auth_tenant_headroom_ratio{{tenant="acme",limit="tokens"}} 0
kvmesh_auth_tenant_headroom_ratio{{tenant="acme",limit="requests"}} 0.5
kvmesh_auth_tenant_headroom_ratio{{tenant="globex",limit="requests"}} 0.1
kvmesh_auth_tenant_headroom_ratio{{tenant="globex",limit="concurrency"}} 0.75
"""


def endpoint(url: str, before: str, after: str, seconds: float = 2.0) -> Endpoint:
    e = Endpoint(url)
    e.prev, e.t_prev = parse(before), 100.0
    e.now, e.t_now, e.up = parse(after), 100.0 + seconds, True
    e.service, e.instance = next(
        (dict(k)["service"], dict(k)["instance"]) for k in e.now["kvmesh_service_info"])
    return e


def beat(worker_id: str, **kw: object) -> Heartbeat:
    return Heartbeat(worker_id=worker_id, model="m", running=2, waiting=1, kv_usage=0.5,
                     num_blocks=100, free_blocks=50, **kw)


def test_rates_are_per_second_over_the_last_interval() -> None:
    e = endpoint("w", WORKER.format(gen=100, hit=10, query=40),
                 WORKER.format(gen=160, hit=40, query=80))
    assert e.rate("kvmesh_worker_generation_tokens_total") == 30.0
    assert Endpoint("x").rate("kvmesh_worker_generation_tokens_total") is None  # one scrape


def test_a_worker_row_joins_its_heartbeat_and_its_endpoint() -> None:
    view = MeshView([endpoint("w", WORKER.format(gen=100, hit=10, query=40),
                              WORKER.format(gen=160, hit=40, query=80))])
    view.beat(beat("w7"), now=50.0)
    view.beat(beat("w8", draining=True), now=50.0)
    view.beat(beat("w9"), now=40.0)
    text = "\n".join(view.render(now=51.0, width=200))
    (w7,) = [ln for ln in text.splitlines() if ln.startswith("w7")]
    assert w7.split() == ["w7", "m", "ok", "2", "1", "50%", "30.0", "75%", "1.0s"]
    (w8,) = [ln for ln in text.splitlines() if ln.startswith("w8")]
    assert "draining" in w8 and w8.split()[6] == "-"  # no endpoint: no rate
    (w9,) = [ln for ln in text.splitlines() if ln.startswith("w9")]
    assert "gone" in w9  # 11 s without a heartbeat


def test_gateway_errors_and_tenants_at_and_near_their_limits() -> None:
    gw = endpoint("g", GATEWAY.format(ok=10, err=0), GATEWAY.format(ok=30, err=4))
    auth = endpoint("a", AUTH.format(refused=5), AUTH.format(refused=9))
    text = "\n".join(MeshView([gw, auth]).render(now=0.0, width=200))
    (row,) = [ln for ln in text.splitlines() if ln.startswith("gateway-8000-1")]
    assert row.split()[1:4] == ["22.0", "2.0", "3"]  # req/s, 5xx/s, in flight
    (acme,) = [ln for ln in text.splitlines() if ln.startswith("acme")]
    assert acme.split()[1:] == ["12.0", "0.0", "2.0", "tokens", "0%", "AT", "LIMIT", "(tokens)"]
    (globex,) = [ln for ln in text.splitlines() if ln.startswith("globex")]
    assert globex.split()[1:] == ["10.0", "0.0", "0.0", "requests", "10%", "NEAR", "LIMIT"]


def test_an_endpoint_that_stops_answering_is_listed() -> None:
    gone = Endpoint("http://127.0.0.1:1/metrics")
    gone.scrape(timeout=0.2)
    scanned = Endpoint("http://127.0.0.1:2/metrics", optional=True)
    scanned.scrape(timeout=0.2)
    text = "\n".join(MeshView([gone, scanned]).render(now=0.0, width=300))
    assert "not answering: http://127.0.0.1:1/metrics" in text
    assert ":2/metrics" not in text  # a scanned port that never answered is not noise


def test_routers_in_their_own_process_and_hosted_by_a_gateway_are_listed() -> None:
    own = endpoint("r", ROUTER.format(service="router", n=0), ROUTER.format(service="router", n=8))
    hosted = endpoint("g", ROUTER.format(service="gateway", n=0),
                      ROUTER.format(service="gateway", n=4))
    plain = endpoint("g2", GATEWAY.format(ok=0, err=0), GATEWAY.format(ok=2, err=0))
    text = "\n".join(MeshView([own, hosted, plain]).render(now=0.0, width=200))
    routers = text.split("ROUTER")[1].split("TENANT")[0].strip().splitlines()[1:]
    assert [row.split()[:3] for row in routers] == [["router-1", "2", "4.0"],
                                                    ["gateway-1/router", "2", "2.0"]]
