"""JSON log lines for every kvmesh service.

Contract: `setup_logging(service, level)` replaces the root logger's handlers with one that
writes a JSON object per line to stderr:
`{"ts", "level", "service", "logger", "msg", "trace_id", "span_id", "request_id"}` plus `exc`
when an exception is logged. `trace_id`/`span_id` come from the current OpenTelemetry span and
`request_id` from `telemetry.propagation.request_id_var`; each is "" when there is none, so
every line has every key and a log query never has to guess. `level` is a logging level name
(the services' `log_level` setting). `KVMESH_LOG_FORMAT=text` keeps plain text lines instead,
for a person reading a terminal. Either way every line, tracebacks included, is passed through
`telemetry.redact.redact` last, so no secret (URL passwords, API keys, bearer tokens, the admin
key) is ever written.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from telemetry.propagation import request_id_var
from telemetry.redact import redact
from telemetry.tracing import current_ids


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        trace_id, span_id = current_ids()
        line = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
            "trace_id": trace_id,
            "span_id": span_id,
            "request_id": getattr(record, "request_id", None) or request_id_var.get(),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(line, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def setup_logging(service: str, level: str = "INFO") -> None:
    """Route every logger through one JSON (or text) handler on stderr at `level`."""
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("KVMESH_LOG_FORMAT", "json").lower() == "text":
        handler.setFormatter(TextFormatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    else:
        handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
