"""Telemetry across the running mesh: one trace per request over gateway -> router -> worker,
exported over OTLP/HTTP to a receiver started here; an incoming traceparent is honoured; errors
are on the spans; /metrics of every service moves with traffic; logs are JSON with trace ids.

This module runs its own small mesh (NATS, router, gateway, one worker) with the OTLP exporter
pointed at the receiver, so the shared mesh of the other tests stays untraced. Its last test
adds a gateway that hosts a router of its own (which, serving the router queue group, could
take the other gateway's requests too: so it runs only then).
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kvmesh.cli import procs
from tests.integration.conftest import MAX_MODEL_LEN, MODEL
from tests.integration.helpers import post, wait_until
from tests.integration.otlp_receiver import OtlpReceiver, ReceivedSpan

SERVER, INTERNAL = 2, 1  # OTLP span kinds


@dataclass
class TracedMesh:
    base_url: str
    env: dict[str, str]  # what every service of it gets
    metrics: dict[str, str]  # service -> its /metrics URL
    logs: Path
    otlp: OtlpReceiver


@pytest.fixture(scope="module")
def traced_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TracedMesh]:
    logs = tmp_path_factory.mktemp("traced-mesh")
    otlp = OtlpReceiver(procs.free_port()).start()
    nats_port, gw_port = procs.free_port(), procs.free_port()
    router_mport, worker_mport = procs.free_port(), procs.free_port()
    cache_mport = procs.free_port()
    env = {"KVMESH_NATS_URL": f"nats://127.0.0.1:{nats_port}",
           "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100",
           "KVMESH_LOG_LEVEL": "INFO", "KVMESH_LOG_FORMAT": "json"}

    def log(name: str):  # the child owns the file
        return open(logs / f"{name}.log", "ab")

    redis_port = procs.free_port()
    children = [procs.start_nats(nats_port, log("nats")),
                procs.start_redis(redis_port, str(logs), log("redis"))]
    env["KVMESH_REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
    try:
        children.append(procs.start("cache", procs.service_argv("cache"), env={
            **env, "KVMESH_CACHE_METRICS_PORT": str(cache_mport)}, log=log("cache")))
        children.append(procs.start("router", procs.service_argv("router"), env={
            **env, "KVMESH_ROUTER_METRICS_PORT": str(router_mport)}, log=log("router")))
        children.append(procs.start("worker", procs.service_argv("worker"), env={
            **env, "KVMESH_WORKER_WORKER_ID": "tw1", "KVMESH_WORKER_TORCH_THREADS": "1",
            "KVMESH_WORKER_MAX_MODEL_LEN": str(MAX_MODEL_LEN),
            "KVMESH_WORKER_NUM_KV_BLOCKS": "256",
            "KVMESH_WORKER_METRICS_PORT": str(worker_mport)}, log=log("worker")))
        children.append(procs.start("gateway", procs.service_argv("gateway"), env={
            **env, "KVMESH_GATEWAY_PORT": str(gw_port), "KVMESH_GATEWAY_AUTH": "0"},
            log=log("gateway")))
        base = f"http://127.0.0.1:{gw_port}"
        _wait_ready(base, children, logs)
        yield TracedMesh(base, env, {
            "gateway": base + "/metrics",
            "router": f"http://127.0.0.1:{router_mport}/metrics",
            "worker": f"http://127.0.0.1:{worker_mport}/metrics",
            "cache": f"http://127.0.0.1:{cache_mport}/metrics"}, logs, otlp)
    finally:
        for c in reversed(children):
            c.stop()
        otlp.stop()


def _wait_ready(base: str, children: list[procs.Child], logs: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        for c in children:
            if not c.alive:
                raise RuntimeError(f"{c.name} exited; see {logs}")
        try:
            with urllib.request.urlopen(base + "/ready", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"traced mesh not ready; logs in {logs}")


def _chat(mesh: TracedMesh, content: str = "Say hi.", max_tokens: int = 4,
          headers: dict[str, str] | None = None, unique: bool = True,
          base_url: str = "") -> tuple[int, dict]:
    """A greedy chat request (to `base_url`, default the mesh's gateway); `unique` adds a nonce
    so the result cache never answers it."""
    if unique:
        content = f"{content} ({secrets.token_hex(4)})"
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens, "temperature": 0}
    req = urllib.request.Request((base_url or mesh.base_url) + "/v1/chat/completions",
                                 data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _trace_of(mesh: TracedMesh, request_id: str, *names: str) -> list[ReceivedSpan]:
    """The spans of the trace of `request_id`, once spans named `names` all arrived."""
    def done(spans: list[ReceivedSpan]) -> bool:
        tids = {s.trace_id for s in spans if s.attrs.get("kvmesh.request_id") == request_id}
        return len(tids) == 1 and set(names) <= {s.name for s in spans
                                                  if s.trace_id in tids}
    spans = mesh.otlp.wait_for(done)
    (tid,) = {s.trace_id for s in spans if s.attrs.get("kvmesh.request_id") == request_id}
    return [s for s in spans if s.trace_id == tid]


def _one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"{len(found)} spans named {name}"
    return found[0]


def test_one_request_is_one_trace_across_gateway_router_worker(traced_mesh: TracedMesh) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=traced_mesh.base_url + "/v1", api_key="x", max_retries=0)
    hello = f"Hello {secrets.token_hex(4)}!"  # never a result-cache hit
    resp = client.chat.completions.create(model=MODEL, max_tokens=4, temperature=0,
                                          messages=[{"role": "user", "content": hello}])
    spans = _trace_of(traced_mesh, resp.id, "POST /v1/chat/completions", "router.route",
                      "inference.generate", "engine.step")
    gw = _one(spans, "POST /v1/chat/completions")
    route = _one(spans, "router.route")
    gen = _one(spans, "inference.generate")
    steps = [s for s in spans if s.name == "engine.step"]

    assert (gw.service, route.service, gen.service) == ("kvmesh-gateway", "kvmesh-router",
                                                         "kvmesh-worker")
    assert gw.parent_id == "" and gw.kind == SERVER
    assert route.parent_id == gw.span_id and gen.parent_id == route.span_id
    assert all(s.parent_id == gen.span_id for s in steps)
    assert all((gen.trace_id, gen.span_id) in s.links for s in steps)
    assert gw.attrs["http.route"] == "/v1/chat/completions"
    assert gw.attrs["http.response.status_code"] == 200
    assert gw.attrs["gen_ai.usage.output_tokens"] == resp.usage.completion_tokens
    assert route.attrs["kvmesh.worker_id"] == "tw1"
    assert route.attrs["kvmesh.router.candidates"] == ["tw1"]
    assert route.attrs["kvmesh.router.attempts"] == 1
    assert gen.attrs["gen_ai.request.model"] == MODEL
    assert gen.attrs["gen_ai.usage.input_tokens"] == resp.usage.prompt_tokens
    assert gen.attrs["gen_ai.usage.output_tokens"] == resp.usage.completion_tokens
    assert gen.attrs["gen_ai.response.finish_reasons"] == [resp.choices[0].finish_reason]
    assert 0 <= gen.attrs["kvmesh.queue_time_ms"] <= gen.attrs["kvmesh.ttft_ms"]
    assert gen.resource["service.instance.id"] == "tw1"
    assert sum(s.attrs["kvmesh.engine.prefill_tokens"] for s in steps) >= 1
    assert all(1 <= s.attrs["kvmesh.engine.batch_size"] <= 8 for s in steps)  # no other load
    assert all(s.attrs["kvmesh.engine.decode_tokens"] >= 0 for s in steps)
    assert all(gen.start_ns <= s.start_ns <= s.end_ns <= gw.end_ns for s in steps)
    assert gw.start_ns <= route.start_ns <= gen.start_ns and gen.end_ns <= gw.end_ns


def test_incoming_traceparent_is_honoured(traced_mesh: TracedMesh) -> None:
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    status, body = _chat(traced_mesh, headers={"traceparent": f"00-{trace_id}-{parent}-01"})
    assert status == 200
    spans = _trace_of(traced_mesh, body["id"], "POST /v1/chat/completions",
                      "inference.generate")
    gw = _one(spans, "POST /v1/chat/completions")
    assert gw.trace_id == trace_id and gw.parent_id == parent


def test_failed_request_span_carries_the_error(traced_mesh: TracedMesh) -> None:
    status, _ = _chat(traced_mesh, content="word " * (MAX_MODEL_LEN + 50))
    assert status == 400

    def failed_route(spans: list[ReceivedSpan]) -> ReceivedSpan | None:
        return next((s for s in spans if s.name == "router.route" and s.status_code == 2), None)

    def done(spans: list[ReceivedSpan]) -> bool:
        # Each service exports on its own schedule: wait for the gateway's span of that trace too.
        route = failed_route(spans)
        return route is not None and any(
            s.kind == SERVER and s.trace_id == route.trace_id for s in spans)
    spans = traced_mesh.otlp.wait_for(done)
    route = failed_route(spans)
    assert route.attrs["kvmesh.error.status"] == 400
    assert "context" in route.status_message
    gw = next(s for s in spans if s.kind == SERVER and s.trace_id == route.trace_id)
    assert gw.attrs["http.response.status_code"] == 400
    assert gw.attrs["error.type"] == "context_length_exceeded"


def _traced_post(mesh: TracedMesh, path: str, body: dict) -> tuple[int, dict, str]:
    """POST in a trace of the test's own; (status, body, that trace's id)."""
    trace_id = secrets.token_hex(16)
    req = urllib.request.Request(mesh.base_url + path, data=json.dumps(body).encode(), headers={
        "Content-Type": "application/json",
        "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return resp.status, json.loads(resp.read()), trace_id


def _spans_of(mesh: TracedMesh, trace_id: str, *names: str) -> list[ReceivedSpan]:
    return [s for s in mesh.otlp.wait_for(lambda spans: set(names) <= {
        s.name for s in spans if s.trace_id == trace_id}) if s.trace_id == trace_id]


def test_tokenize_is_traced_at_the_router_and_counted_under_its_model(
        traced_mesh: TracedMesh) -> None:
    url = traced_mesh.metrics["gateway"]
    before = _scrape(url)
    for path, body in (("/tokenize", {"model": MODEL, "prompt": "Hello there"}),
                       ("/detokenize", {"model": MODEL, "tokens": [19556, 665]})):
        status, _, trace_id = _traced_post(traced_mesh, path, body)
        assert status == 200
        name = "router." + path.strip("/")
        spans = _spans_of(traced_mesh, trace_id, "POST " + path, name)
        gw, router = _one(spans, "POST " + path), _one(spans, name)
        assert router.service == "kvmesh-router" and router.parent_id == gw.span_id
    after = _scrape(url)
    for route in ("/tokenize", "/detokenize"):
        key = f"kvmesh_gateway_requests_total{{model={MODEL},route={route},status=200,tenant=none}}"
        assert after.get(key, 0) - before.get(key, 0) == 1, route


def test_a_response_is_a_chat_operation(traced_mesh: TracedMesh) -> None:
    body = {"model": MODEL, "input": f"Hi {secrets.token_hex(4)}", "max_output_tokens": 3,
            "store": False}
    status, _, trace_id = _traced_post(traced_mesh, "/v1/responses", body)
    assert status == 200
    spans = _spans_of(traced_mesh, trace_id, "POST /v1/responses", "inference.generate")
    for name in ("POST /v1/responses", "inference.generate"):
        assert _one(spans, name).attrs["gen_ai.operation.name"] == "chat", name


def test_the_worker_exports_vllms_request_histograms(traced_mesh: TracedMesh) -> None:
    """One finished request moves each of them by one observation, under both names."""
    url = traced_mesh.metrics["worker"]
    names = ("request_prompt_tokens", "request_generation_tokens",
             "request_max_num_generation_tokens", "request_params_max_tokens",
             "request_params_n", "request_prefill_time_seconds",
             "request_decode_time_seconds", "request_inference_time_seconds")
    before = _scrape(url)
    status, body = _chat(traced_mesh, max_tokens=3)
    assert status == 200
    wait_until(lambda: _value(_scrape(url), "vllm:request_inference_time_seconds_count")
               > _value(before, "vllm:request_inference_time_seconds_count"),
               "the worker observes the finished request")
    after = _scrape(url)
    for name in names:
        for prefix in ("kvmesh_worker_", "vllm:"):
            count = prefix + name + "_count"
            assert _value(after, count) - _value(before, count) == 1, count
    moved = {name: _value(after, f"vllm:{name}_sum") - _value(before, f"vllm:{name}_sum")
             for name in names}
    assert moved["request_prompt_tokens"] == body["usage"]["prompt_tokens"]
    assert moved["request_generation_tokens"] == body["usage"]["completion_tokens"]
    assert moved["request_params_max_tokens"] == 3 and moved["request_params_n"] == 1


def _scrape(url: str) -> dict[str, float]:
    """Sample name + sorted labels -> value."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "le")
            if "le" not in s.labels:
                out[f"{s.name}{{{labels}}}"] = s.value
    return out


def _value(samples: dict[str, float], prefix: str) -> float:
    """Sum of the samples whose key starts with `prefix`."""
    return sum(v for k, v in samples.items() if k.startswith(prefix))


def test_a_model_nobody_serves_is_labelled_unknown_not_by_its_name(
        traced_mesh: TracedMesh) -> None:
    """Each label value is a series kept for the gateway's life: a caller's made-up model
    names must not add series (an audit grew /metrics to 20 MB with 404s)."""
    url = traced_mesh.metrics["gateway"]
    before = _scrape(url)
    names = [f"made-up-{secrets.token_hex(4)}" for _ in range(3)]
    for name in names:
        body = {"model": name, "messages": [{"role": "user", "content": "hi"}]}
        assert post(traced_mesh.base_url + "/v1/chat/completions", body)[0] == 404
    after = _scrape(url)
    assert not [k for k in after if any(name in k for name in names)]
    key = ("kvmesh_gateway_requests_total{model=unknown,route=/v1/chat/completions,"
           "status=404,tenant=none}")
    assert after[key] - before.get(key, 0) == 3


def test_metrics_move_with_traffic(traced_mesh: TracedMesh) -> None:
    before = {svc: _scrape(url) for svc, url in traced_mesh.metrics.items()}
    for _ in range(2):
        assert _chat(traced_mesh, max_tokens=3)[0] == 200
    time.sleep(0.6)  # the worker's engine gauges refresh every step; counters already moved
    after = {svc: _scrape(url) for svc, url in traced_mesh.metrics.items()}

    def moved(svc: str, prefix: str) -> float:
        return _value(after[svc], prefix) - _value(before[svc], prefix)

    assert moved("gateway", "kvmesh_gateway_time_to_first_token_seconds_count") == 2
    assert moved("gateway", "kvmesh_gateway_e2e_request_latency_seconds_count") == 2
    assert moved("gateway", "kvmesh_gateway_inter_token_latency_seconds_count") >= 2
    assert moved("gateway", 'kvmesh_gateway_requests_total{model=' + MODEL) == 2
    assert moved("gateway", "kvmesh_gateway_generation_tokens_total") >= 2
    assert "kvmesh_gateway_result_cache_hit_ratio{}" in after["gateway"]
    assert moved("router", "kvmesh_router_requests_total{model=" + MODEL + ",status=200}") == 2
    assert moved("router", "kvmesh_router_route_latency_seconds_count") == 2
    assert after["router"]["kvmesh_router_live_workers{}"] == 1  # it read 0 (issue 13)
    assert moved("worker", "kvmesh_worker_requests_total{model=" + MODEL + ",status=200}") == 2
    for name in ("queue_time_seconds_count", "time_to_first_token_seconds_count",
                 "e2e_request_latency_seconds_count"):
        assert moved("worker", "kvmesh_worker_" + name) == 2, name
    assert moved("worker", "kvmesh_worker_prompt_tokens_total") > 2
    assert moved("worker", "kvmesh_worker_generation_tokens_total") >= 2
    assert moved("worker", "kvmesh_worker_engine_step_seconds_count") >= 2
    assert moved("worker", "kvmesh_worker_prefix_cache_query_tokens_total") > 0
    w = after["worker"]
    assert w[f"kvmesh_worker_kv_cache_blocks{{model={MODEL}}}"] == 256
    assert 0 <= w[f"kvmesh_worker_kv_cache_usage_ratio{{model={MODEL}}}"] <= 1
    assert 0 < w[f"kvmesh_worker_prefix_cache_hit_ratio{{model={MODEL}}}"] <= 1  # same prompt
    assert w[f"kvmesh_worker_num_requests_running{{model={MODEL}}}"] == 0


def test_result_cache_lookup_and_store_are_spans(traced_mesh: TracedMesh) -> None:
    prompt = f"Count to three. {secrets.token_hex(4)}"
    before = _scrape(traced_mesh.metrics["gateway"])
    cache_before = _scrape(traced_mesh.metrics["cache"])
    status, first = _chat(traced_mesh, content=prompt, unique=False)
    assert status == 200
    spans = _trace_of(traced_mesh, first["id"], "cache.lookup", "cache.store",
                      "inference.generate", "POST /v1/chat/completions")
    gw = _one(spans, "POST /v1/chat/completions")
    assert gw.kind == SERVER and gw.service == "kvmesh-gateway"
    lookup, store = _one(spans, "cache.lookup"), _one(spans, "cache.store")
    assert lookup.attrs["kvmesh.cache.hit"] is False and lookup.parent_id == gw.span_id
    assert store.service == "kvmesh-cache" and store.parent_id == gw.span_id

    status, second = _chat(traced_mesh, content=prompt, unique=False)
    assert status == 200 and second["choices"] == first["choices"]
    spans = _trace_of(traced_mesh, second["id"], "cache.lookup")
    assert _one(spans, "cache.lookup").attrs["kvmesh.cache.hit"] is True
    # The hit answered; a `router.route` span may be there all the same: the gateway routes
    # while it looks up (cache_route_overlap) and drops the route on a hit (test_result_cache
    # checks that the worker is left with no work).
    after = _scrape(traced_mesh.metrics["gateway"])
    key = "kvmesh_gateway_result_cache_lookups_total{result=%s}"
    assert after[key % "hit"] - before.get(key % "hit", 0) == 1
    assert after[key % "miss"] - before.get(key % "miss", 0) == 1
    assert 0 < after["kvmesh_gateway_result_cache_hit_ratio{}"] <= 1

    cache_after = _scrape(traced_mesh.metrics["cache"])

    def moved(name: str) -> float:
        return cache_after[name + "{}"] - cache_before.get(name + "{}", 0)
    assert moved("kvmesh_cache_hits_total") == 1 and moved("kvmesh_cache_misses_total") == 1
    assert moved("kvmesh_cache_leads_total") == 1 and moved("kvmesh_cache_puts_total") == 1
    assert moved("kvmesh_cache_redis_errors_total") == 0
    assert 0 < cache_after["kvmesh_cache_hit_ratio{}"] <= 1
    assert _value(cache_after, "kvmesh_cache_lookup_seconds_count") - _value(
        cache_before, "kvmesh_cache_lookup_seconds_count") == 2


def test_client_request_id_user_and_metadata_are_on_the_trace_and_in_the_logs(
        traced_mesh: TracedMesh) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=traced_mesh.base_url + "/v1", api_key="x", max_retries=0)
    mine = f"client-{secrets.token_hex(6)}"
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, max_tokens=2, temperature=0, user="alice", metadata={"team": "search"},
        messages=[{"role": "user", "content": f"Hi {secrets.token_hex(4)}"}],
        extra_headers={"X-Request-Id": mine})
    assert raw.headers["x-request-id"] == mine
    resp = raw.parse()
    assert resp._request_id == mine
    server = _one(_trace_of(traced_mesh, resp.id, "POST /v1/chat/completions"),
                  "POST /v1/chat/completions")
    assert server.attrs["kvmesh.x_request_id"] == mine
    assert server.attrs["gen_ai.request.user"] == "alice"
    assert server.attrs["kvmesh.metadata.team"] == "search"

    def logged() -> bool:
        lines = (traced_mesh.logs / "gateway.log").read_text().splitlines()
        return any(json.loads(ln).get("request_id") == mine for ln in lines
                   if ln.startswith("{"))
    deadline = time.monotonic() + 10  # the access line is written as the response ends
    while not logged():
        assert time.monotonic() < deadline, "no gateway log line carries the client's id"
        time.sleep(0.1)


def test_log_lines_are_json_with_trace_ids(traced_mesh: TracedMesh) -> None:
    status, body = _chat(traced_mesh)
    assert status == 200
    spans = _trace_of(traced_mesh, body["id"], "POST /v1/chat/completions")
    trace_id = spans[0].trace_id
    lines = [ln for ln in (traced_mesh.logs / "gateway.log").read_text().splitlines()
             if ln.startswith("{")]
    records = [json.loads(ln) for ln in lines]
    assert records and all({"ts", "level", "msg", "trace_id", "span_id", "request_id"}
                           <= r.keys() for r in records)
    mine = [r for r in records if r["trace_id"] == trace_id]
    assert mine and mine[-1]["request_id"] == body["id"] and len(mine[-1]["span_id"]) == 16
    worker_lines = (traced_mesh.logs / "worker.log").read_text().splitlines()
    assert all(json.loads(ln)["service"] == "worker" for ln in worker_lines
               if ln.startswith("{"))


def test_health_and_metrics_routes_are_not_traced(traced_mesh: TracedMesh) -> None:
    assert post  # helpers stay importable for raw calls
    for path in ("/health", "/metrics"):
        with urllib.request.urlopen(traced_mesh.base_url + path, timeout=5) as resp:
            assert resp.status == 200
    time.sleep(0.3)
    assert not [s for s in traced_mesh.otlp.spans if s.attrs.get("url.path") in
                ("/health", "/metrics")]


@pytest.fixture
def hosting_url(traced_mesh: TracedMesh) -> Iterator[str]:
    """A second gateway on the traced mesh, hosting its router (colocate_router)."""
    port = procs.free_port()
    child = procs.start("gateway-hosting", procs.service_argv("gateway"), env={
        **traced_mesh.env, "KVMESH_GATEWAY_PORT": str(port), "KVMESH_GATEWAY_AUTH": "0",
        "KVMESH_GATEWAY_COLOCATE_ROUTER": "1"},
        log=open(traced_mesh.logs / "gateway-hosting.log", "ab"))  # noqa: SIM115
    try:
        _wait_ready(f"http://127.0.0.1:{port}", [child], traced_mesh.logs)
        # ready is the gateway's registry; its hosted router hears the workers on its own
        wait_until(lambda: _chat(traced_mesh, base_url=f"http://127.0.0.1:{port}")[0] != 503,
                   "the hosted router knows no worker", timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        child.stop()


def test_a_hosted_router_traces_its_route_inside_the_gateways_trace(
        traced_mesh: TracedMesh, hosting_url: str) -> None:
    status, body = _chat(traced_mesh, base_url=hosting_url)
    assert status == 200, body
    spans = _trace_of(traced_mesh, body["id"], "POST /v1/chat/completions", "router.route",
                      "inference.generate")
    gw = _one(spans, "POST /v1/chat/completions")
    route = _one(spans, "router.route")
    gen = _one(spans, "inference.generate")
    assert (gw.service, route.service, gen.service) == ("kvmesh-gateway", "kvmesh-gateway",
                                                        "kvmesh-worker")
    assert gw.resource["service.instance.id"] == route.resource["service.instance.id"]
    assert route.parent_id == gw.span_id and gen.parent_id == route.span_id
    assert route.attrs["kvmesh.worker_id"] == "tw1"
    assert route.attrs["kvmesh.router.attempts"] == 1
