"""The request path as rebuilt for speed (issue 12), on real services: batched and coalesced
delivery changes no answer, a dead engine process ends its streams and takes its worker down,
gateway processes share one port, and a stopping gateway ends its open streams cleanly."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from kvmesh.cli import procs
from tests.integration.conftest import MODEL, Mesh
from tests.integration.helpers import engine_pid, open_stream, post, sse_events
from tests.integration.private_mesh import private_mesh

LONG = {"model": MODEL, "prompt": "Count: one, two,", "max_tokens": 300, "temperature": 0,
        "ignore_eos": True}


def _stream_text(events: list[str]) -> dict[int, str]:
    text: dict[int, str] = {}
    for e in events:
        if e == "[DONE]":
            continue
        for c in json.loads(e).get("choices", []):
            text[c["index"]] = text.get(c["index"], "") + (c["delta"].get("content") or "")
    return text


def test_streamed_choices_and_logprobs_equal_the_gathered_answer(mesh: Mesh) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Name two colours."}],
            "max_tokens": 24, "n": 2, "temperature": 0.7, "seed": 11, "logprobs": True,
            "top_logprobs": 2}
    status, whole, _ = post(mesh.base_url + "/v1/chat/completions", body)
    assert status == 200, whole
    with open_stream(mesh.base_url + "/v1/chat/completions",
                     {**body, "stream_options": {"include_usage": True}}) as resp:
        events = list(sse_events(resp))
    assert events[-1] == "[DONE]"
    streamed = _stream_text(events)
    for choice in whole["choices"]:
        i = choice["index"]
        assert streamed[i] == choice["message"]["content"]
        tokens = [lp["token"] for lp in choice["logprobs"]["content"]]
        assert "".join(tokens) == choice["message"]["content"]
    usage = json.loads(events[-2])["usage"]
    assert usage["completion_tokens"] == whole["usage"]["completion_tokens"]
    assert usage["prompt_tokens"] == whole["usage"]["prompt_tokens"]
    reasons = [c["finish_reason"] for e in events[:-1] for c in json.loads(e)["choices"]
               if c.get("finish_reason")]
    assert sorted(reasons) == sorted(c["finish_reason"] for c in whole["choices"])


def test_a_killed_engine_process_ends_its_stream_and_takes_the_worker_down(
        tmp_path: Path) -> None:
    with private_mesh(tmp_path, workers=("solo",)) as (m, _):
        worker = m.workers["solo"].proc
        engine = engine_pid(worker.pid)
        with open_stream(m.base_url + "/v1/completions", LONG) as resp:
            events = sse_events(resp)
            assert json.loads(next(events))["choices"][0]["text"] is not None
            os.kill(engine, signal.SIGKILL)
            rest = list(events)
        assert rest[-1] == "[DONE]"
        errors = [json.loads(e)["error"] for e in rest[:-1] if "error" in json.loads(e)]
        assert errors and errors[0]["code"] == "worker_died", rest[-3:]
        assert worker.wait(30) != 0  # it reports itself down and exits for its supervisor
        status, body, _ = post(m.base_url + "/v1/completions", {**LONG, "max_tokens": 2})
        assert status == 503, body  # no worker left: refused, not hung


def _gateway(nats_url: str, port: int, logs: Path, name: str, **extra: str) -> procs.Child:
    env = {"KVMESH_NATS_URL": nats_url, "KVMESH_GATEWAY_PORT": str(port),
           "KVMESH_GATEWAY_AUTH": "0", "KVMESH_GATEWAY_RESULT_CACHE": "0",
           **{f"KVMESH_GATEWAY_{k.upper()}": v for k, v in extra.items()}}
    child = procs.start(name, procs.service_argv("gateway"), env=env,
                        log=open(logs / f"{name}.log", "ab"))  # noqa: SIM115
    return child


def _ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _, _ = _get(url + "/ready")
        if status == 200:
            return
        time.sleep(0.2)
    raise AssertionError(f"{url} never ready")


def _get(url: str) -> tuple[int, Any, dict[str, str]]:
    from tests.integration.helpers import call

    try:
        return call("GET", url, timeout=5)
    except OSError:
        return 0, None, {}


def test_two_gateway_processes_share_a_port_and_stopping_one_drops_no_stream_of_the_other(
        mesh: Mesh, tmp_path: Path) -> None:
    port = procs.free_port()
    url = f"http://127.0.0.1:{port}"
    a = _gateway(mesh.nats_url, port, tmp_path, "gw-a")
    b = _gateway(mesh.nats_url, port, tmp_path, "gw-b")
    try:
        procs.wait_port(port, 30, a.proc)
        _ready(url)
        seen: set[str] = set()
        deadline = time.monotonic() + 60
        while len(seen) < 2 and time.monotonic() < deadline:  # each its own connection
            status, body, headers = post(url + "/v1/completions", {**LONG, "max_tokens": 1})
            if status == 503:  # this process has not heard a worker's heartbeat yet
                time.sleep(0.1)
                continue
            assert status == 200, body
            seen.add(headers["x-kvmesh-gateway"])
        assert len(seen) == 2, seen  # the kernel spread connections over both processes
        with open_stream(url + "/v1/completions", LONG) as resp:
            mine = resp.headers["x-kvmesh-gateway"]
            other = b if mine.endswith(f"-{a.proc.pid}") else a
            events = sse_events(resp)
            next(events)
            other.proc.send_signal(signal.SIGTERM)
            assert other.proc.wait(30) == 0
            rest = list(events)
        assert rest[-1] == "[DONE]"
        errors = [e for e in rest[:-1] if "error" in json.loads(e)]
        assert not errors, errors
        assert json.loads(rest[-2])["choices"][0]["finish_reason"] == "length"
        status, body, _ = post(url + "/v1/completions", {**LONG, "max_tokens": 1})
        assert status == 200, body  # the survivor takes every new connection
    finally:
        a.stop()
        b.stop()


def test_a_stopping_gateway_ends_its_open_streams_with_an_error_event_and_done(
        mesh: Mesh, tmp_path: Path) -> None:
    port = procs.free_port()
    gw = _gateway(mesh.nats_url, port, tmp_path, "gw-drain", grace_period="1")
    try:
        procs.wait_port(port, 30, gw.proc)
        _ready(f"http://127.0.0.1:{port}")
        with open_stream(f"http://127.0.0.1:{port}/v1/completions",
                         {**LONG, "max_tokens": 900}) as resp:
            events = sse_events(resp)
            next(events)
            gw.proc.send_signal(signal.SIGTERM)
            rest = list(events)
        assert rest[-1] == "[DONE]"
        error = json.loads(rest[-2])["error"]
        assert error["code"] == "gateway_shutdown", rest[-3:]
        assert gw.proc.wait(30) == 0
    finally:
        gw.stop()
