"""compose.yaml as the tests read it: loaded (YAML merge keys resolved), its `${VAR}` references
interpolated the way Docker Compose does, with the values of .env.example.

Only the interpolation forms compose.yaml uses are supported: `${VAR}`, `${VAR:-default}`,
`${VAR-default}`, `${VAR:?message}` and `$$`; anything else raises, so a new form is noticed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
KVMESH_SERVICES = ("auth", "cache", "router", "gateway", "inference", "inference-gpu")
_REF = re.compile(r"\$(\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|[A-Za-z_])")


def env_example() -> dict[str, str]:
    """The variables .env.example sets (comments and blank lines skipped)."""
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def raw() -> dict[str, Any]:
    """compose.yaml as YAML, before interpolation."""
    return yaml.safe_load(COMPOSE.read_text())


def interpolate(text: str, env: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        whole, name, op, arg = m.group(1), m.group(2), m.group(3), m.group(4)
        if whole == "$":
            return "$"
        if name is None:
            raise ValueError(f"unbraced variable reference {m.group(0)!r} in compose.yaml")
        value = env.get(name)
        if op is None:
            return value or ""
        if op in (":-", "-"):
            unset = value is None or (op == ":-" and value == "")
            return arg if unset else value  # type: ignore[return-value]
        if value is None or (op == ":?" and value == ""):
            raise ValueError(f"{name}: {arg}")
        return value

    return _REF.sub(sub, text)


def load(env: dict[str, str] | None = None) -> dict[str, Any]:
    """compose.yaml interpolated with `env` (default: .env.example)."""
    return yaml.safe_load(interpolate(COMPOSE.read_text(), env_example() if env is None else env))


def dockerfile_final_stage(path: Path = DOCKERFILE) -> list[str]:
    """The instructions (continuation lines joined) of the Dockerfile's last stage."""
    joined = re.sub(r"\\\n\s*", " ", path.read_text())
    lines = [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.startswith("#")]
    last = max(i for i, ln in enumerate(lines) if ln.upper().startswith("FROM "))
    return lines[last:]
