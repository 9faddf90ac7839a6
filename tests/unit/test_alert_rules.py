"""The alert rules (deploy/prometheus/alerts.yml) against their unit tests in Prometheus's
rule-test format (deploy/prometheus/tests/), run by the real `promtool` (scripts/setup.sh puts
Debian's into .venv/bin); the Prometheus config that loads them; and the rules' coverage:
every alert has a test where it fires and one where it must stay silent, and every metric a
rule reads is one kvmesh (or Prometheus, or the blackbox exporter) exports."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.metric_names import EXTERNAL, exported, promql_names

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
RULES = PROM / "alerts.yml"
RULE_TESTS = sorted((PROM / "tests").glob("*.yml"))
# The alerts docs/OPERATIONS.md promises (issue 17): no workers, error ratio, TTFT SLO burn,
# KV pressure, NATS or Redis down, a tenant throttled.
REQUIRED = {"KvmeshNoWorkers", "KvmeshHighErrorRatio", "KvmeshTTFTBudgetBurnFast",
            "KvmeshTTFTBudgetBurnSlow", "KvmeshKVCachePressure", "KvmeshNATSDown",
            "KvmeshRedisDown", "KvmeshTenantThrottled"}


def promtool() -> str:
    found = shutil.which("promtool") or shutil.which("promtool", path=str(Path(sys.executable)
                                                                            .parent))
    assert found, "promtool is missing: run scripts/setup.sh (Debian's prometheus package), " \
                  "or put any Prometheus release's promtool on PATH"
    return found


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)


def rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_alert_rules_pass_their_unit_tests() -> None:
    assert RULE_TESTS
    result = run_promtool("test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS)


def test_a_broken_rule_fails_its_unit_test(tmp_path: Path) -> None:
    """The tests can fail: with the no-workers alert reading the wrong router, they do."""
    (tmp_path / "tests").mkdir()
    broken = RULES.read_text().replace("max(kvmesh_router_live_workers) == 0",
                                       "min(kvmesh_router_live_workers) == 0")
    assert broken != RULES.read_text()
    (tmp_path / "alerts.yml").write_text(broken)
    for t in RULE_TESTS:
        (tmp_path / "tests" / t.name).write_text(t.read_text())
    result = run_promtool("test", "rules", *(str(tmp_path / "tests" / t.name)
                                             for t in RULE_TESTS))
    assert result.returncode != 0
    assert "KvmeshNoWorkers" in result.stdout + result.stderr


def test_prometheus_config_and_rules_are_valid() -> None:
    result = run_promtool("check", "config", str(PROM / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "alerts.yml" in result.stdout  # the config loads the rules file


def test_every_alert_is_tested_firing_and_silent() -> None:
    fired: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for t in case.get("alert_rule_test", []):
                (fired if t.get("exp_alerts") else silent).add(t["alertname"])
    alerts = {r["alert"] for r in rules() if "alert" in r}
    assert alerts >= REQUIRED
    assert alerts - fired == set(), "alerts with no test where they fire"
    assert alerts - silent == set(), \
        "alerts with no test where they must stay silent"


def test_rules_read_only_metrics_that_exist() -> None:
    recorded = {r["record"] for r in rules() if "record" in r}
    known = exported() | EXTERNAL | recorded
    for r in rules():
        unknown = promql_names(r["expr"]) - known
        assert not unknown, f"{r.get('alert') or r.get('record')} reads {unknown}"


def test_every_alert_has_a_severity_and_a_summary() -> None:
    for r in (r for r in rules() if "alert" in r):
        assert r["labels"]["severity"] in ("critical", "warning", "info"), r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]


@pytest.mark.parametrize("expr", ["sum(rate(kvmesh_gateway_nonsense_total[5m]))"])
def test_the_metric_check_catches_a_misspelt_name(expr: str) -> None:
    assert promql_names(expr) - exported() == {"kvmesh_gateway_nonsense_total"}
