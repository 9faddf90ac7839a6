"""A worker's start-up line says what it serves, on which device, in which dtype and why."""

from __future__ import annotations

import json

from tests.integration.conftest import MODEL, Mesh


def test_start_up_line_names_device_and_dtype(mesh: Mesh) -> None:
    lines = [json.loads(line) for line in (mesh.logs / "w1.log").read_text().splitlines()
             if line.startswith("{")]
    serving = [rec["msg"] for rec in lines if " serving " in rec["msg"]]
    # The session mesh sets KVMESH_WORKER_DTYPE=float32 (conftest.py): the variable reaches
    # the engine, and the line says it was asked for.
    assert serving == [f"worker w1 serving {MODEL} on cpu, float32: set by dtype"]
