"""`kvmesh trace` against a small HTTP server that answers like Jaeger's query API (the JSON
shape of Jaeger's `/api/traces` endpoints; no Jaeger binary runs on these machines)."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kvmesh.cli.commands import main

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
RID = "chatcmpl-0123abcd"


def _span(sid: str, op: str, pid: str, start: int, dur: int, parent: str | None = None,
          **tags: object) -> dict:
    return {
        "traceID": TRACE_ID, "spanID": sid, "operationName": op, "flags": 1,
        "references": [{"refType": "CHILD_OF", "traceID": TRACE_ID, "spanID": parent}]
        if parent else [],
        "startTime": start, "duration": dur, "processID": pid, "logs": [], "warnings": None,
        "tags": [{"key": k.replace("__", "."), "type": "string" if isinstance(v, str) else
                  "int64", "value": v} for k, v in tags.items()],
    }


TRACE = {
    "traceID": TRACE_ID,
    "spans": [  # out of order on purpose: Jaeger does not sort them
        _span("c3", "inference.generate", "p3", 1_000_300, 40_000, "b2",
              gen_ai__usage__output_tokens=4, kvmesh__ttft_ms=12.5),
        _span("a1", "POST /v1/chat/completions", "p1", 1_000_000, 45_000,
              http__response__status_code=200, kvmesh__request_id=RID),
        _span("d4", "engine.step", "p3", 1_000_400, 9_000, "c3", kvmesh__engine__batch_size=1,
              kvmesh__engine__prefill_tokens=9),
        _span("b2", "router.route", "p2", 1_000_100, 2_000, "a1", kvmesh__worker_id="w1"),
        _span("e5", "engine.step", "p3", 1_010_000, 3_000, "c3", kvmesh__engine__batch_size=1,
              kvmesh__engine__decode_tokens=1),
        _span("f6", "cache.lookup", "p1", 1_000_050, 40, "a1", error=True,
              error__type="redis_down"),
    ],
    "processes": {"p1": {"serviceName": "kvmesh-gateway", "tags": []},
                  "p2": {"serviceName": "kvmesh-router", "tags": []},
                  "p3": {"serviceName": "kvmesh-worker", "tags": []}},
    "warnings": None,
}


class _Jaeger(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # http.server's name
        url = urllib.parse.urlparse(self.path)
        q = urllib.parse.parse_qs(url.query)
        if url.path == f"/api/traces/{TRACE_ID}":
            body, status = {"data": [TRACE]}, 200
        elif url.path.startswith("/api/traces/"):
            body, status = {"data": None, "errors": [{"code": 404, "msg": "trace not found"}]}, 404
        elif url.path == "/api/traces":
            tags = json.loads(q.get("tags", ["{}"])[0])
            hit = tags.get("kvmesh.request_id") == RID and q["service"] == ["kvmesh-gateway"]
            body, status = {"data": [TRACE] if hit else [], "total": 0, "limit": 0,
                            "offset": 0, "errors": None}, 200
        else:
            body, status = {}, 404
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def jaeger() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Jaeger)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_trace_by_request_id_prints_the_span_tree(jaeger: str, capsys: pytest.CaptureFixture
                                                  ) -> None:
    assert main(["trace", RID, "--jaeger-url", jaeger]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"trace {TRACE_ID}  6 spans  45.00 ms")
    assert "kvmesh-gateway, kvmesh-router, kvmesh-worker" in out[0]
    rows = out[2:]
    ops = [r.split("  ")[-1] for r in rows]
    assert [r.split("ms")[0].strip() for r in rows][:2] == ["0.00", "0.05"]  # start offsets
    assert "POST /v1/chat/completions [kvmesh-gateway]" in rows[0]
    assert "├─ cache.lookup [kvmesh-gateway]  ERROR" in rows[1] and "redis_down" in rows[1]
    assert "└─ router.route [kvmesh-router]" in rows[2] and "kvmesh.worker_id=w1" in rows[2]
    assert "   └─ inference.generate [kvmesh-worker]" in rows[3]
    assert "output_tokens=4" in rows[3] and "kvmesh.ttft_ms=12.50" in rows[3]
    assert "      ├─ engine.step" in rows[4] and "prefill_tokens=9" in rows[4]
    assert "      └─ engine.step" in rows[5] and "decode_tokens=1" in rows[5]
    assert "40.00 ms" in rows[3]  # duration column
    assert len(ops) == 6


def test_trace_by_trace_id(jaeger: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["trace", TRACE_ID.upper(), "--jaeger-url", jaeger]) == 0
    assert "router.route" in capsys.readouterr().out


def test_unknown_ids_and_unreachable_jaeger_exit_1(jaeger: str, capsys: pytest.CaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["trace", "chatcmpl-nope", "--jaeger-url", jaeger]) == 1
    assert "no trace for 'chatcmpl-nope'" in capsys.readouterr().err
    assert main(["trace", "0" * 32, "--jaeger-url", jaeger]) == 1
    assert "no trace 000" in capsys.readouterr().err
    monkeypatch.setenv("KVMESH_JAEGER_URL", "http://127.0.0.1:9")
    assert main(["trace", RID]) == 1
    assert "cannot query Jaeger at http://127.0.0.1:9" in capsys.readouterr().err
