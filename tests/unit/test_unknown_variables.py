"""A `KVMESH_*` variable that no kvmesh setting has (a misspelling) is named in a warning at
start, with the name it most resembles; it is never refused, and no variable that kvmesh, its
tests, compose or its scripts set or read is warned about."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

MISSPELT = {  # the audit's, and the names they were meant to be
    "KVMESH_WORKER_MAX_MODEL_LENGTH": "KVMESH_WORKER_MAX_MODEL_LEN",
    "KVMESH_WORKR_MAX_NUM_SEQS": "KVMESH_WORKER_MAX_NUM_SEQS",
    "KVMESH_WORKER_MAX_NUM_SEQ": "KVMESH_WORKER_MAX_NUM_SEQS",
}
# KVMESH_ words in the code that are no variables: kvmesh/config.py's placeholders for a
# field's name, a Python constant of the compose tests.
NOT_VARIABLES = {"KVMESH_FOO", "KVMESH_GATEWAY_FOO", "KVMESH_SERVICES"}
SKIPPED_DIRS = {".venv", ".git", "scratch", ".hypothesis", "kvmesh.egg-info", "__pycache__",
                ".pytest_cache", ".ruff_cache"}
# the files that spell variables wrong on purpose
MISSPELLING_FILES = {Path(__file__).resolve(), ROOT / "kvmesh" / "cli" / "variables.py"}
# Markdown sets nothing: its names are examples (misspelt ones among them) and history
SKIPPED_SUFFIXES = {".md"}


def test_each_misspelt_variable_is_warned_about_with_the_name_it_resembles() -> None:
    from kvmesh.cli.variables import warnings

    lines = warnings({**dict.fromkeys(MISSPELT, "1"), "KVMESH_MAX_NUM_SEQS": "2",
                      "PATH": "/bin"})
    assert len(lines) == len(MISSPELT), lines
    for line, (name, meant) in zip(lines, sorted(MISSPELT.items()), strict=True):
        assert f"unknown variable {name}:" in line and f"did you mean {meant}?" in line


@pytest.mark.parametrize("name", [
    "KVMESH_AUTH_MAX_NUM_SEQS",  # a worker's field under auth's prefix
    "KVMESH_GATEWAY_WORKER_ID",  # a worker's field under the gateway's
    "KVMESH_FROBNICATE",  # no service's prefix, read nowhere
    "KVMESH_UP_SERVED_NAME",  # kvmesh up has no such option
])
def test_a_name_no_service_reads_is_unknown(name: str) -> None:
    from kvmesh.cli.variables import unknown

    assert unknown({name: "1"}) == [name]


@pytest.mark.parametrize("name", [
    "KVMESH_NATS_URL", "KVMESH_WORKER_NATS_URL", "KVMESH_NATS_WORKER_PASSWORD",
    "KVMESH_NATS_OPS_PASSWORD", "KVMESH_UP_STATE_DIR", "KVMESH_STATE_DIR", "KVMESH_BUSY_POLL",
    "KVMESH_TOKENIZER_JSON", "KVMESH_AUTH_FAIL_OPEN", "KVMESH_WORKER_DEAD_AFTER",
    "KVMESH_AUTH_TIMEOUT", "KVMESH_CACHE_LOOKUP_TIMEOUT", "KVMESH_WORKER_BLOCK_SIZE",
    "KVMESH_SEED", "KVMESH_MODEL_DIR", "KVMESH_LOG_FORMAT", "KVMESH_HOP_MARKS", "KVMESH_KEY",
])
def test_names_read_outside_a_services_own_fields_are_known(name: str) -> None:
    from kvmesh.cli.variables import unknown

    assert unknown({name: "1"}) == []


def test_no_variable_the_repository_sets_or_reads_is_warned_about() -> None:
    from kvmesh.cli.variables import unknown

    pattern = re.compile(r"KVMESH_[A-Z0-9_]*[A-Z0-9](?![A-Za-z0-9_*<{])")  # not a prefix
    seen: dict[str, Path] = {}
    for path in ROOT.rglob("*"):
        if (SKIPPED_DIRS & set(path.relative_to(ROOT).parts) or not path.is_file()
                or path in MISSPELLING_FILES or path.suffix in SKIPPED_SUFFIXES):
            continue
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        for name in pattern.findall(text):
            seen.setdefault(name, path)
    assert "KVMESH_WORKER_MAX_NUM_SEQS" in seen  # the scan found the names
    flagged = {n: str(seen[n]) for n in unknown(dict.fromkeys(seen, "")) if n not in NOT_VARIABLES}
    assert not flagged, flagged


def _run(argv: list[str], env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "kvmesh.cli", *argv], cwd=ROOT,
                          env={**os.environ, **env_extra}, capture_output=True, text=True,
                          timeout=120)


def test_kvmesh_serve_warns_at_start_and_goes_on() -> None:
    done = _run(["serve", "worker", "--help"], dict.fromkeys(MISSPELT, "1"))
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines()
              if line.startswith("kvmesh serve worker: warning: unknown variable ")]
    assert len(warned) == len(MISSPELT), done.stderr
    for name in MISSPELT:
        assert any(name + ":" in line for line in warned), done.stderr


def test_kvmesh_up_warns_at_start(tmp_path: Path) -> None:
    blocker = tmp_path / "file"  # a state dir kvmesh up cannot use: it stops right after
    blocker.write_text("")
    done = _run(["up", "--state-dir", str(blocker)], {"KVMESH_WORKR_MAX_NUM_SEQS": "2"})
    assert done.stderr.splitlines()[0] == (
        "kvmesh up: warning: unknown variable KVMESH_WORKR_MAX_NUM_SEQS: no kvmesh setting has "
        "that name, so it changes nothing; did you mean KVMESH_WORKER_MAX_NUM_SEQS?")
