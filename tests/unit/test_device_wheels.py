"""`bench/device_wheels.py`: which requirements it resolves for the GPU device machine."""

from __future__ import annotations

import tomllib
from pathlib import Path

from bench.device_wheels import EXTRA, PRESENT, requirement_name, requirements

ROOT = Path(__file__).resolve().parents[2]


def test_every_runtime_dependency_the_device_lacks_is_asked_for_and_none_it_has():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {requirement_name(r) for r in requirements()}
    assert {requirement_name(d) for d in deps} - PRESENT <= names
    assert not names & PRESENT  # torch, numpy, ...: the device's own builds stay
    assert {"msgspec", "nats-py", "llguidance", "jsonschema", "pytest-timeout"} <= names
    assert set(EXTRA) <= names


def test_a_requirement_is_named_without_its_version_markers_or_extras():
    assert requirement_name("uvloop>=0.19; sys_platform != 'win32'") == "uvloop"
    assert requirement_name("huggingface_hub[hf_xet]>=0.3") == "huggingface-hub"
    assert requirement_name("Jinja2") == "jinja2"
