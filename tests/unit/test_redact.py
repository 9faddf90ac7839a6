"""Secrets never reach a log line: URL passwords, API key secrets, bearer tokens, and values
registered as secrets are replaced, whatever the logger and the format."""

from __future__ import annotations

import io
import json
import logging

from telemetry.logs import JsonFormatter
from telemetry.redact import add_secret, redact

KEY = "kvm_0123456789ab_" + "S" * 43


def test_secrets_in_text_are_replaced_and_the_rest_kept() -> None:
    line = (f"redis://:s3cret@redis:6379/0 nats://gateway:pw@nats:4222 redis://redis:6379/0 "
            f"{KEY} Authorization: Bearer abc.def")
    assert redact(line) == ("redis://:***@redis:6379/0 nats://gateway:***@nats:4222 "
                            "redis://redis:6379/0 kvm_0123456789ab_*** Authorization: Bearer ***")


def test_every_json_log_line_is_redacted_tracebacks_included() -> None:
    add_secret("admin-key-1234")
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter("test"))
    logger = logging.getLogger("kvmesh.test.redact")
    logger.addHandler(handler)
    try:
        logger.warning("connecting to %s with %s", "redis://u:hunter2@h/0", "admin-key-1234")
        try:
            raise ConnectionError(f"refused: {KEY}")
        except ConnectionError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    text = out.getvalue()
    for secret in ("hunter2", "admin-key-1234", "S" * 43):
        assert secret not in text
    first = json.loads(text.splitlines()[0])
    assert first["msg"] == "connecting to redis://u:***@h/0 with ***"
