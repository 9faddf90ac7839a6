"""`kvmesh serve --help` (or `-h`) prints serve's usage, the services it runs, and exits 0; a
service's own `--help` still lists that service's settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kvmesh.cli.serve import SERVICES

ROOT = Path(__file__).resolve().parents[2]


def _kvmesh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kvmesh.cli", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_serve_help_lists_the_services_and_exits_0(flag: str) -> None:
    done = _kvmesh("serve", flag)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: kvmesh serve ")
    assert "{" + ",".join(SERVICES) + "}" in done.stdout
    assert done.stderr == ""


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_a_services_own_help_still_lists_its_settings(flag: str) -> None:
    done = _kvmesh("serve", "worker", flag)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: kvmesh serve worker ")
    assert "--max-num-seqs" in done.stdout


def test_serve_run_as_a_module_answers_help_the_same_way() -> None:
    done = subprocess.run([sys.executable, "-m", "kvmesh.cli.serve", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: kvmesh serve {")


def test_serve_without_a_known_service_is_a_usage_error() -> None:
    for argv in (["serve"], ["serve", "bogus"]):
        done = _kvmesh(*argv)
        assert done.returncode == 2, done
        assert "usage: kvmesh serve" in done.stderr
