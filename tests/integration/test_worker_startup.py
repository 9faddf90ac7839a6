"""A worker's start-up line says what it serves, on which device, in which dtype and why, and
the context it serves; its revision names the settings that change answers; a worker whose
KV pool is smaller than its context serves the pool's size, so the mesh refuses what the pool
could not finish (RELIABILITY round ten, row 17)."""

from __future__ import annotations

import json

from kvmesh.cli import procs
from tests.integration.conftest import MAX_MODEL_LEN, MODEL, Mesh
from tests.integration.helpers import post, wait_until

SMALL_POOL_MODEL = "smol-small-pool"


def _records(mesh: Mesh, worker_id: str) -> list[dict]:
    return [json.loads(line) for line in (mesh.logs / f"{worker_id}.log").read_text()
            .splitlines() if line.startswith("{")]


def _serving_lines(mesh: Mesh, worker_id: str) -> list[str]:
    return [rec["msg"] for rec in _records(mesh, worker_id)
            if rec["msg"].startswith(f"worker {worker_id} serving ")]


def test_start_up_line_names_device_dtype_and_context(mesh: Mesh) -> None:
    # The session mesh sets KVMESH_WORKER_DTYPE=float32 (conftest.py): the variable reaches
    # the engine, and the line says it was asked for.
    assert _serving_lines(mesh, "w1") == [
        f"worker w1 serving {MODEL} on cpu, float32: set by dtype; context {MAX_MODEL_LEN} tokens"]


def test_the_revision_names_the_settings_that_change_answers(mesh: Mesh) -> None:
    """The result cache keys on it: workers restarted with another dtype or context must not
    be served the old ones' answers (the session's workers: float32, 1024 tokens)."""
    # any live session worker (test_worker_failure kills one and starts a replacement)
    revisions: list[str] = []
    wait_until(lambda: revisions.extend(
        beat.revision for w in sorted(mesh.live_worker_ids())
        if (beat := mesh.stats_or_none(w)) is not None) or revisions,
        "a session worker answers")
    files, *settings = revisions[0].split(";")
    assert files.startswith("SmolLM2-135M-Instruct") and files.count(":") == 2
    assert settings == ["float32", "kv=auto", "quant=none", f"ctx={MAX_MODEL_LEN}"]


def test_a_pool_smaller_than_the_context_is_the_context_served(mesh: Mesh) -> None:
    worker = procs.start("wpool", procs.service_argv("worker"), env={
        "KVMESH_NATS_URL": mesh.nats_url, "KVMESH_WORKER_WORKER_ID": "wpool",
        "KVMESH_WORKER_SERVED_NAME": SMALL_POOL_MODEL, "KVMESH_WORKER_TORCH_THREADS": "1",
        "KVMESH_WORKER_MAX_MODEL_LEN": str(MAX_MODEL_LEN),
        "KVMESH_WORKER_NUM_KV_BLOCKS": "8",  # of 16 tokens: 128
    }, log=open(mesh.logs / "wpool.log", "ab"))  # noqa: SIM115 - the child owns it
    url = mesh.base_url + "/v1/completions"
    prompt = " ".join(["word"] * 100)
    try:
        fits = {"model": SMALL_POOL_MODEL, "prompt": prompt, "max_tokens": 4}

        def served() -> bool:
            assert worker.alive, "the small-pool worker exited"
            return post(url, fits)[0] == 200

        wait_until(served, "the small-pool worker serves", timeout=120)
        assert _serving_lines(mesh, "wpool")[0].endswith("; context 128 tokens")
        warned = [rec for rec in _records(mesh, "wpool")  # a JSON line, as every other
                  if "serving a context of 128" in rec["msg"]]
        assert [rec["level"] for rec in warned] == ["WARNING"]
        status, body, _ = post(url, {**fits, "max_tokens": 100})
        assert status == 400, body
        assert body["error"]["param"] == "max_tokens"
        assert "128" in body["error"]["message"]
        status, body, _ = post(url, {**fits, "max_tokens": 20, "ignore_eos": True})
        assert status == 200 and body["usage"]["completion_tokens"] == 20, body
        assert body["choices"][0]["finish_reason"] == "length"
    finally:
        worker.stop()
