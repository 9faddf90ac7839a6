"""The frame codec every kvmesh message travels in (the messages themselves: `kvmesh.wire`).

A frame is a msgpack array `[SCHEMA_VERSION, kind, body]`; `body` is the message dataclass as
a map of its fields. msgspec encodes and validates it in C: the hot path (one frame per engine
step per gateway, carrying every request's deltas) pays microseconds, not a Python walk over
every field.

Contract:
- `encode(msg)` writes one frame for any registered message.
- `decode(data, *expected)` reads one frame and returns the message, or raises `WireError`
  (never anything else) for bytes that are not msgpack, a frame of another schema version, an
  unknown kind, a kind outside `expected`, a missing field or a field of the wrong type
  (`bool` is not an `int`; an `int` is accepted as a `float`). Unknown fields are ignored, so
  an older reader accepts a newer writer's additions within one schema version.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, TypeVar

import msgspec

SCHEMA_VERSION = 2  # 2: array frames [v, kind, body] (1 was a map with "v" and "t" keys)


class WireError(ValueError):
    """A frame that does not decode or validate; the message says what is wrong."""


class Kind(Protocol):
    KIND: ClassVar[str]


M = TypeVar("M")
_DECODERS: dict[str, tuple[type, msgspec.msgpack.Decoder[Any]]] = {}
_HEADER = msgspec.msgpack.Decoder(tuple[int, str, msgspec.Raw])
_ENCODER = msgspec.msgpack.Encoder()


def register(*classes: type) -> None:
    """Make `classes` (dataclasses with a unique `KIND`) encodable and decodable."""
    for cls in classes:
        kind = cls.KIND  # type: ignore[attr-defined]
        if kind in _DECODERS and _DECODERS[kind][0] is not cls:
            raise ValueError(f"message kind {kind!r} is registered twice")
        _DECODERS[kind] = (cls, msgspec.msgpack.Decoder(cls))


def encode(msg: Any) -> bytes:
    """One frame holding `msg`."""
    return _ENCODER.encode((SCHEMA_VERSION, msg.KIND, msg))


def decode(data: bytes, *expected: type[M]) -> M:
    """Decode one frame; with `expected` given, its kind must be one of them. Raises WireError."""
    try:
        version, kind, body = _HEADER.decode(data)
    except msgspec.ValidationError:
        raise WireError("frame is not a [version, kind, body] array") from None
    except msgspec.DecodeError as exc:
        raise WireError(f"frame is not msgpack: {exc}") from None
    if version != SCHEMA_VERSION:
        raise WireError(f"schema version {version!r}, expected {SCHEMA_VERSION}")
    entry = _DECODERS.get(kind)
    if entry is None:
        raise WireError(f"unknown message kind {kind!r}")
    cls, decoder = entry
    if expected and cls not in expected:
        names = ", ".join(e.KIND for e in expected)  # type: ignore[attr-defined]
        raise WireError(f"expected a {names} message, got {kind}")
    try:
        return decoder.decode(body)  # type: ignore[no-any-return]
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise WireError(f"{kind}: {exc}") from None
