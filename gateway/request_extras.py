"""The request fields that are not sampling knobs but still do something: `logit_bias`, the
session-affinity hints (`prompt_cache_key`, `user`), the labels recorded on the request's
trace (`user`, `safety_identifier`, `metadata`), and `stream_options`' keys.

Types were checked by gateway/api_fields.py; this checks shapes and bounds (400 naming the
field) and sets them on the parsed request.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.errors import bad_field
from kvmesh.wire import SamplingFields

MAX_LOGIT_BIAS = 1024  # entries; each costs the sampler a scatter per step
BIAS_LIMIT = 100.0
_TOKEN_ID = re.compile(r"^[0-9]{1,19}$")
STREAM_OPTIONS = frozenset({"include_usage", "include_obfuscation"})


def parse_logit_bias(raw: Any) -> dict[int, float]:
    """`{"<token id>": bias}` as token id -> bias, sorted by id (a canonical cache key).
    Ids are checked against the vocabulary at the worker, which knows it."""
    if raw is None:
        return {}
    if not isinstance(raw, dict) or len(raw) > MAX_LOGIT_BIAS:
        raise bad_field("logit_bias", f"must be an object of at most {MAX_LOGIT_BIAS} "
                        "token ids (as strings) to biases")
    out: dict[int, float] = {}
    for key, bias in raw.items():
        if not isinstance(key, str) or not _TOKEN_ID.match(key) or int(key) >= 1 << 63:
            raise bad_field("logit_bias", f"key {key!r} is not a token id")
        if isinstance(bias, bool) or not isinstance(bias, int | float) \
                or not -BIAS_LIMIT <= bias <= BIAS_LIMIT:
            raise bad_field("logit_bias", f"the bias of token {key} must be a number in "
                            f"[-100, 100], got {bias!r}")
        out[int(key)] = float(bias)
    return dict(sorted(out.items()))


def session_hint(body: dict[str, Any]) -> str:
    """The session-affinity hint: `prompt_cache_key`, else `user` ("" for none)."""
    return str(body.get("prompt_cache_key") or body.get("user") or "")


def trace_labels(body: dict[str, Any]) -> dict[str, str]:
    """Span attributes for the caller's labels: `user`, `safety_identifier`, `metadata`."""
    out: dict[str, str] = {}
    if body.get("user"):
        out["gen_ai.request.user"] = body["user"]
    if body.get("safety_identifier"):
        out["kvmesh.safety_identifier"] = body["safety_identifier"]
    meta = body.get("metadata") or {}
    if len(meta) > 16:
        raise bad_field("metadata", "at most 16 pairs")
    for key, value in meta.items():
        if len(key) > 64 or not isinstance(value, str) or len(value) > 512:
            raise bad_field("metadata", "keys of at most 64 characters, string values of at "
                            "most 512")
        out[f"kvmesh.metadata.{key}"] = value
    return out


def check_stream_options(body: dict[str, Any]) -> None:
    opts = body.get("stream_options")
    if not isinstance(opts, dict):
        return  # absent; a wrong type is the caller's 400
    for key, value in opts.items():
        if key not in STREAM_OPTIONS:
            raise bad_field(f"stream_options.{key}", "unknown option (include_usage, "
                            "include_obfuscation)")
        if value is not None and not isinstance(value, bool):
            raise bad_field(f"stream_options.{key}", "must be a boolean")


def parse_extras(body: dict[str, Any], req: SamplingFields) -> dict[str, str]:
    """Set `req.logit_bias`; check `stream_options`' keys; return the trace labels."""
    req.logit_bias = parse_logit_bias(body.get("logit_bias"))
    check_stream_options(body)
    return trace_labels(body)
