"""bench/hop_marks.py: the marks a wrapped call leaves, and how a request's chain is followed."""

from __future__ import annotations

import asyncio
import importlib.util
import types
from pathlib import Path

import pytest

from bench import hop_marks

SITE = Path(hop_marks.__file__).parent / "hop_marks_site" / "sitecustomize.py"


@pytest.fixture
def site(tmp_path, monkeypatch):
    """The sitecustomize module, loaded apart (not installed) and marking into `tmp_path`."""
    monkeypatch.setenv("KVMESH_HOP_MARKS", str(tmp_path))
    spec = importlib.util.spec_from_file_location("hop_site", SITE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "_fd", None)
    return mod


def test_wrapped_calls_mark_on_entry_or_return_and_only_when_asked(site, tmp_path) -> None:
    class Svc:
        async def handle(self, subject: str) -> str:
            return subject

        def step(self, n: int) -> types.SimpleNamespace:
            return types.SimpleNamespace(outputs=[0] * n)

    module = types.SimpleNamespace(Svc=Svc)
    site._patch(module, [
        ("Svc.handle", "handled", "entry", lambda args, _r: args[1] == "yes"),
        ("Svc.step", "stepped", "return", lambda _a, result: bool(result.outputs)),
    ])
    svc = Svc()
    assert asyncio.run(svc.handle("yes")) == "yes"
    asyncio.run(svc.handle("no"))
    assert svc.step(2).outputs == [0, 0]
    svc.step(0)
    marks = [line.split()[0] for f in tmp_path.glob("*.marks")
             for line in f.read_text().splitlines()]
    assert marks == ["handled", "stepped"]
    assert hop_marks.read_marks(tmp_path, ["handled", "stepped"])[0][1] == "handled"
    with pytest.raises(RuntimeError, match="no marks for \\['gone'\\]"):
        hop_marks.read_marks(tmp_path, ["handled", "gone"])


def test_a_request_is_followed_only_through_its_whole_chain() -> None:
    chain = ["a", "b"]
    marks = [(105, "a"), (107, "b"), (110, "b"),  # request 1: a, then the first b after it
             (205, "b"), (220, "a")]  # request 2: its only a comes after its first bytes
    rows = hop_marks.follow(marks, [(100, 115), (200, 215)], chain)
    assert rows == {"a": [5e-6], "b": [7e-6], "client_first_bytes": [15e-6]}


def test_an_optional_point_may_be_missed() -> None:
    """The plain loop (CPU) has no prompt-only call: its chain skips that point."""
    chain = ["a", "engine_prompt_launched", "b"]
    rows = hop_marks.follow([(105, "a"), (107, "b")], [(100, 115)], chain)
    assert rows["b"] == [7e-6] and rows["engine_prompt_launched"] == []
    with_it = hop_marks.follow([(105, "a"), (106, "engine_prompt_launched"), (107, "b")],
                               [(100, 115)], chain)
    assert with_it["engine_prompt_launched"] == [6e-6]
