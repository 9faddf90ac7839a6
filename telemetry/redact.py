"""Secrets out of log lines: every line a kvmesh service logs passes through `redact`.

What it hides (the forms secrets take in this code base):
- a password in a URL's user info: `redis://:s3cret@host`, `nats://gateway:pw@nats:4222`
  become `redis://:***@host`, `nats://gateway:***@nats:4222`;
- the secret half of an API key: `kvm_<id>_<secret>` becomes `kvm_<id>_***` (the id names the
  key and is not secret);
- a bearer token: `Bearer <anything>` becomes `Bearer ***`;
- any value registered with `add_secret` (the admin key, NATS passwords), wherever it shows.
"""

from __future__ import annotations

import re

_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s/]+@")
_API_KEY = re.compile(r"\b(?P<head>kvm_[0-9a-f]{12}_)[A-Za-z0-9_-]{43}")
_BEARER = re.compile(r"(?P<head>\bBearer\s+)\S+", re.IGNORECASE)
_secrets: set[str] = set()


def add_secret(value: str) -> None:
    """Hide `value` (4 characters or more) from every later log line."""
    if len(value) >= 4:
        _secrets.add(value)


def redact(text: str) -> str:
    """`text` with every secret above replaced by `***`."""
    if "://" in text:
        text = _URL_PASSWORD.sub(r"\g<head>***@", text)
    if "kvm_" in text:
        text = _API_KEY.sub(r"\g<head>***", text)
    if "earer" in text:
        text = _BEARER.sub(r"\g<head>***", text)
    for secret in _secrets:
        text = text.replace(secret, "***")
    return text
