"""`kvmesh trace <request-id | trace-id>`: find a trace in Jaeger and print its span tree.

Contract:
- The Jaeger query service is `KVMESH_JAEGER_URL` (default `http://localhost:16686`). A 32-hex
  argument is a trace id: `GET /api/traces/<id>`. Anything else is a request id (the `id` of an
  OpenAI response, e.g. `chatcmpl-...`): `GET /api/traces?service=kvmesh-gateway&tags=
  {"kvmesh.request_id": "<id>"}&lookback=<...>&limit=1`, the newest match wins; with no
  match, the same by `kvmesh.x_request_id` (an `x-request-id` the client chose).
- Responses are Jaeger's query API JSON: `{"data": [{"traceID", "spans": [{"spanID",
  "operationName", "references": [{"refType": "CHILD_OF", "spanID"}], "startTime" (us),
  "duration" (us), "tags": [{"key", "value"}], "processID"}], "processes": {id:
  {"serviceName"}}}]}`.
- `render(trace)` draws one line per span, children under their parent in start order:
  offset from the trace's start, duration, service, operation, and the attributes that matter
  (worker, tokens, finish reason, status, errors). A span whose parent is missing is a root.
- Exit status: 0 printed, 1 not found or Jaeger unreachable (with a message saying which).
"""

from __future__ import annotations

import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

DEFAULT_URL = "http://localhost:16686"
TRACE_ID = re.compile(r"^[0-9a-fA-F]{32}$")
SHOWN_TAGS = (
    "http.response.status_code", "kvmesh.tenant", "kvmesh.worker_id", "kvmesh.router.attempts",
    "kvmesh.router.prefix_overlap_blocks", "kvmesh.queue_time_ms", "kvmesh.ttft_ms",
    "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.response.finish_reasons",
    "kvmesh.engine.batch_size", "kvmesh.engine.prefill_tokens", "kvmesh.engine.decode_tokens",
    "kvmesh.cache.hit", "error.type", "otel.status_description",
)


class TraceNotFound(LookupError):
    pass


def _get(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def find_trace(ident: str, base_url: str | None = None, lookback: str = "2d") -> dict[str, Any]:
    """The Jaeger trace object for a trace id or request id; TraceNotFound if none."""
    base = (base_url or os.environ.get("KVMESH_JAEGER_URL") or DEFAULT_URL).rstrip("/")
    if TRACE_ID.match(ident):
        try:
            data = _get(f"{base}/api/traces/{ident.lower()}").get("data") or []
        except urllib.error.HTTPError as err:
            if err.code == 404:
                raise TraceNotFound(f"no trace {ident} in Jaeger at {base}") from None
            raise
    else:  # a response id, else an x-request-id the client chose
        data = []
        for tag in ("kvmesh.request_id", "kvmesh.x_request_id"):
            query = urllib.parse.urlencode({
                "service": "kvmesh-gateway", "tags": json.dumps({tag: ident}),
                "lookback": lookback, "limit": 1})
            data = _get(f"{base}/api/traces?{query}").get("data") or []
            if data:
                break
    if not data:
        raise TraceNotFound(f"no trace for {ident!r} in Jaeger at {base}")
    return max(data, key=lambda t: max((s["startTime"] for s in t["spans"]), default=0))


def _tags(span: dict[str, Any]) -> dict[str, Any]:
    return {t["key"]: t.get("value") for t in span.get("tags") or []}


def _parent(span: dict[str, Any]) -> str | None:
    for ref in span.get("references") or []:
        if ref.get("refType") == "CHILD_OF":
            return ref.get("spanID")
    return None


def _ms(us: float) -> str:
    return f"{us / 1000:9.2f} ms"


def render(trace: dict[str, Any]) -> str:
    """The span tree of one Jaeger trace as text (see the module contract)."""
    spans = trace.get("spans") or []
    if not spans:
        return f"trace {trace.get('traceID', '?')}: no spans"
    procs = {pid: p.get("serviceName", pid) for pid, p in (trace.get("processes") or {}).items()}
    ids = {s["spanID"] for s in spans}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for s in spans:
        parent = _parent(s)
        children.setdefault(parent if parent in ids else None, []).append(s)
    for group in children.values():
        group.sort(key=lambda s: s["startTime"])
    t0 = min(s["startTime"] for s in spans)
    end = max(s["startTime"] + s["duration"] for s in spans)
    services = sorted({procs.get(s.get("processID"), "?") for s in spans})
    lines = [f"trace {trace.get('traceID')}  {len(spans)} spans  {(end - t0) / 1000:.2f} ms  "
             f"services: {', '.join(services)}",
             f"{'start':>12} {'duration':>12}  span"]

    def walk(span: dict[str, Any], prefix: str, last: bool, depth: int) -> None:
        tags = _tags(span)
        shown = " ".join(f"{k.rsplit('.', 1)[-1] if k.startswith('gen_ai.usage') else k}="
                         f"{_fmt(tags[k])}" for k in SHOWN_TAGS if k in tags)
        error = tags.get("error") is True or tags.get("otel.status_code") == "ERROR"
        branch = "" if depth == 0 else prefix + ("└─ " if last else "├─ ")
        service = procs.get(span.get("processID"), "?")
        lines.append(f"{_ms(span['startTime'] - t0)} {_ms(span['duration'])}  {branch}"
                     f"{span['operationName']} [{service}]{'  ERROR' if error else ''}"
                     f"{'  ' + shown if shown else ''}")
        kids = children.get(span["spanID"], [])
        child_prefix = "" if depth == 0 else prefix + ("   " if last else "│  ")
        for i, kid in enumerate(kids):
            walk(kid, child_prefix, i == len(kids) - 1, depth + 1)

    for root in children.get(None, []):
        walk(root, "", True, 0)
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.2f}"
    if isinstance(v, list):
        return ",".join(map(str, v))
    return str(v)


def main(ident: str, base_url: str | None = None) -> int:
    try:
        print(render(find_trace(ident, base_url)))
    except TraceNotFound as exc:
        print(f"kvmesh: {exc}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError, ValueError) as exc:
        base = base_url or os.environ.get("KVMESH_JAEGER_URL") or DEFAULT_URL
        print(f"kvmesh: cannot query Jaeger at {base}: {exc} (set KVMESH_JAEGER_URL)",
              file=sys.stderr)
        return 1
    return 0
