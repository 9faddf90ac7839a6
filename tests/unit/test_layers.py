"""The house stays straight: every import in the source tree follows the layer rules of
kvmesh/layers.py (a lower layer never imports a higher one), read with `ast` so imports inside
functions and under `if TYPE_CHECKING:` count too. The checker is tried on planted violations
in a small fake tree, so it is known to fail when it should."""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from kvmesh import layers

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Import:
    path: Path
    line: int
    text: str  # the statement as written, for the message
    importer: str  # module name, e.g. "kvmesh.actor"
    target: str  # the module it loads, e.g. "telemetry.propagation"


def unit_of(module: str, rules: Mapping[str, frozenset[str]]) -> str | None:
    """The longest key of `rules` that is `module` or a package above it (None: not ours)."""
    keys = [k for k in rules if module == k or module.startswith(k + ".")]
    return max(keys, key=len) if keys else None


def _modules(root: Path, tops: set[str]) -> dict[str, Path]:
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[0] not in tops:
            continue
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool,
             known: Mapping[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module if is_package else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    # `from kvmesh import wire` loads the module kvmesh.wire; `from kvmesh.wire import Chunk`
    # loads kvmesh.wire.
    subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
    return subs or [base]


def imports(root: Path, rules: Mapping[str, frozenset[str]]) -> Iterator[Import]:
    """Every import, at any depth, of every module under `root` that `rules` rule."""
    known = _modules(root, {k.split(".")[0] for k in rules})
    for module, path in known.items():
        source = path.read_text()
        tree = ast.parse(source, str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                text = ast.get_source_segment(source, node) or ast.unparse(node)
                for target in _targets(node, module, path.name == "__init__.py", known):
                    yield Import(path, node.lineno, " ".join(text.split()), module, target)


def _allowed(target: str, own: str, allowed: frozenset[str],
             rules: Mapping[str, frozenset[str]]) -> bool:
    unit = unit_of(target, rules)
    if unit is None or unit == own:
        return True
    return any((target == e or target.startswith(e + ".")) and unit == unit_of(e, rules)
               for e in allowed)


def violations(root: Path, rules: Mapping[str, frozenset[str]], leaves: frozenset[str],
               known_breaks: Mapping[tuple[str, str], str]) -> tuple[list[str], list[str]]:
    """(imports that break a rule, known breaks no longer in the tree)."""
    broken, seen = [], set()
    for imp in imports(root, rules):
        own = unit_of(imp.importer, rules)
        assert own is not None
        where = f"{imp.path.relative_to(root)}:{imp.line}: `{imp.text}`"
        if (imp.importer, imp.target) in known_breaks:
            seen.add((imp.importer, imp.target))
            continue
        if imp.importer in leaves and unit_of(imp.target, rules) and imp.target != imp.importer:
            broken.append(f"{where}: {imp.importer} is a leaf (kvmesh/layers.py LEAVES): it "
                          f"imports nothing of this tree, so not {imp.target}")
        elif not _allowed(imp.target, own, rules[own], rules):
            may = f"only {', '.join(sorted(rules[own]))}" if rules[own] else "nothing"
            broken.append(f"{where}: {own} may import {may} of this tree (kvmesh/layers.py "
                          f"RULES), not {imp.target}")
    stale = [f"{a} no longer imports {b}: delete its KNOWN_BREAKS line in kvmesh/layers.py"
             for a, b in known_breaks if (a, b) not in seen]
    return broken, stale


def test_every_import_in_the_tree_follows_the_layer_rules() -> None:
    broken, stale = violations(ROOT, layers.RULES, layers.LEAVES, layers.KNOWN_BREAKS)
    assert not broken, "imports that point up:\n" + "\n".join(broken)
    assert not stale, "\n".join(stale)


def test_every_package_of_the_tree_has_a_rule() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    tops = {k.split(".")[0] for k in layers.RULES}
    assert packages - {"tests", "bench", "scripts"} <= tops, "a package without a layer rule"
    assert set(layers.RULES["kvmesh.cli"]) | {"kvmesh.cli"} == set(layers.RULES)
    for unit, allowed in layers.RULES.items():
        assert all(unit_of(e, layers.RULES) for e in allowed), (unit, allowed)


# -- the checker itself, on a small fake tree ------------------------------------------------

FAKE_RULES = {
    "kvmesh": frozenset(),
    "kvmesh.cli": frozenset({"kvmesh", "telemetry", "gateway"}),
    "telemetry": frozenset({"kvmesh"}),
    "gateway": frozenset({"kvmesh", "telemetry", "cache.client"}),
    "cache": frozenset({"kvmesh"}),
}


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name in ["kvmesh/__init__.py", "kvmesh/cli/__init__.py", "kvmesh/wire/__init__.py",
                 "telemetry/__init__.py", "gateway/__init__.py", "cache/__init__.py",
                 "cache/client.py", "cache/service.py", "kvmesh/leaf.py",
                 "telemetry/propagation.py", *files]:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files.get(name, ""))
    return root


def _check(root: Path, known: Mapping[tuple[str, str], str] | None = None
           ) -> tuple[list[str], list[str]]:
    return violations(root, FAKE_RULES, frozenset({"kvmesh.leaf"}), known or {})


def test_a_clean_fake_tree_passes(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "kvmesh/actor.py": "import json\nfrom kvmesh import leaf\nfrom . import leaf as again\n",
        "telemetry/tracing.py": "from kvmesh.actor import x\n",
        "gateway/app.py": "from cache.client import ResultCacheClient\nimport telemetry\n",
        "kvmesh/cli/main.py": "def main():\n    from gateway import app\n",
    })
    assert _check(root) == ([], [])


@pytest.mark.parametrize(("name", "source", "says"), [
    # an import inside a function, the way actor.py once took its propagation
    ("kvmesh/actor.py", "def run():\n    from telemetry import propagation\n",
     "kvmesh/actor.py:2: `from telemetry import propagation`: kvmesh may import nothing of this "
     "tree (kvmesh/layers.py RULES), not telemetry.propagation"),
    ("kvmesh/actor.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import gateway\n",
     "`import gateway`: kvmesh may import nothing of this tree"),
    # the CLI is a unit of its own: the ground floor may not reach up into it
    ("telemetry/launch.py", "from kvmesh.cli import procs\n",
     "telemetry may import only kvmesh of this tree (kvmesh/layers.py RULES), not kvmesh.cli"),
    # a rule naming one module of a unit admits that module only
    ("gateway/app.py", "from cache import service\n",
     "gateway may import only cache.client, kvmesh, telemetry of this tree (kvmesh/layers.py "
     "RULES), not cache.service"),
    ("kvmesh/wire/codec.py", "from ..cli import procs\n",
     "kvmesh/wire/codec.py:1: `from ..cli import procs`: kvmesh may import nothing of this "
     "tree (kvmesh/layers.py RULES), not kvmesh.cli"),
    ("kvmesh/leaf.py", "from kvmesh import actor\n", "kvmesh.leaf is a leaf"),
])
def test_a_planted_violation_fails_naming_file_import_and_rule(
        tmp_path: Path, name: str, source: str, says: str) -> None:
    root = _tree(tmp_path, {"kvmesh/actor.py": "", name: source})
    broken, _ = _check(root)
    assert len(broken) == 1 and says in broken[0], broken


def test_a_known_break_is_let_through_until_it_is_gone(tmp_path: Path) -> None:
    known = {("telemetry.generation", "gateway"): "moves beside the gateway"}
    root = _tree(tmp_path, {"telemetry/generation.py": "from gateway import app\n"})
    assert _check(root, known) == ([], [])
    (root / "telemetry/generation.py").write_text("")
    assert _check(root, known)[1] == [
        "telemetry.generation no longer imports gateway: delete its KNOWN_BREAKS line in "
        "kvmesh/layers.py"]
