"""API keys: format, generation, salted hashing.

A key reads `kvm_<id>_<secret>`: `id` is 12 hex digits and names the key (it is not secret and
may appear in logs, lists and revocations); `secret` is 32 random bytes, URL-safe base64 (43
characters). Redis holds only `sha256(salt || secret)` with a random 16-byte salt per key, so a
Redis dump reveals no usable key. The secret carries 256 bits of entropy, so a fast hash is
enough (a slow KDF protects guessable passwords, which these are not) and verification stays
cheap on the request path. The plain key exists only in the answer to its creation.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import NewType

KeyId = NewType("KeyId", str)
PREFIX = "kvm_"
_KEY = re.compile(r"^kvm_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


class MalformedKey(ValueError):
    """A string that is not in the API key format."""


def generate() -> tuple[str, KeyId, str]:
    """A fresh key: (plain key, its id, its secret)."""
    key_id = KeyId(secrets.token_hex(6))
    secret = secrets.token_urlsafe(32)
    return f"{PREFIX}{key_id}_{secret}", key_id, secret


def parse(key: str) -> tuple[KeyId, str]:
    """(id, secret) of a plain key; MalformedKey if it is not one."""
    m = _KEY.match(key)
    if m is None:
        raise MalformedKey("the API key is malformed")
    return KeyId(m.group(1)), m.group(2)


def new_salt() -> str:
    return secrets.token_hex(16)


def digest(salt: str, secret: str) -> str:
    """The stored form of a secret: hex sha256 of salt bytes then secret bytes."""
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def matches(salt: str, stored: str, secret: str) -> bool:
    """Does `secret` hash to `stored`? Constant time in the secret."""
    return hmac.compare_digest(digest(salt, secret), stored)


def fingerprint(key: str) -> str:
    """A non-reversible cache key for a presented key (the gateway never keeps it plain)."""
    return hashlib.sha256(key.encode()).hexdigest()
