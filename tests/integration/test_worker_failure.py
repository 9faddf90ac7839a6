"""A worker killed mid-stream: the client hears an error and [DONE] within seconds, and the
next request succeeds on a surviving worker. Runs last (file order): it leaves one worker
killed and starts a replacement."""

from __future__ import annotations

import json
import signal
import time

from tests.integration.conftest import MODEL, Mesh
from tests.integration.helpers import open_stream, post, sse_events
from tests.integration.test_cancel import serving_worker


def test_killed_worker_gives_error_event_then_done(mesh: Mesh, client) -> None:
    assert len(mesh.live_worker_ids()) >= 2
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me a story."}],
            "max_tokens": 600, "temperature": 0, "ignore_eos": True}
    resp = open_stream(mesh.base_url + "/v1/chat/completions", body)
    events = sse_events(resp)
    for _ in range(3):
        next(events)
    victim = serving_worker(mesh)
    mesh.workers[victim].stop(timeout=0, sig=signal.SIGKILL)
    killed_at = time.monotonic()

    rest = list(events)
    elapsed = time.monotonic() - killed_at
    assert rest[-1] == "[DONE]"
    errors = [json.loads(e)["error"] for e in rest[:-1] if e.startswith('{"error"')]
    assert errors and errors[-1]["code"] == "worker_died", rest[-3:]
    assert elapsed < 10

    status, answer, _ = post(mesh.base_url + "/v1/chat/completions", {
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
    assert status == 200, answer
    assert answer["choices"][0]["message"]["content"]
    mesh.start_worker(victim + "-replacement")
