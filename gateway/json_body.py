"""Request bodies as JSON values that every later hop can carry.

`read_json(request, limit, timeout)` reads a body, undoes its `Content-Encoding` and returns
its JSON value. Every failure is an `ApiError` in the OpenAI shape, never a 500 or a
text/plain reply:
- 408 (code `body_timeout`) for a body not whole within `timeout` seconds (0: no bound);
- 413 (code `body_too_large`) for a body over `limit` bytes, as sent or once decompressed (a
  small gzip body may inflate to gigabytes, so inflating stops past the limit);
- 400 (code `unsupported_encoding`) for a coding other than gzip, deflate and identity, or
  more than `MAX_CODINGS` of them (each is inflated on the event loop);
- 400 (code `invalid_body`) for a body that is not valid in its coding (corrupt, truncated);
- 400 (code `invalid_json`) from `parse_json(raw)`, for anything the mesh could not pass on
  intact:
  - not JSON (`NaN` and `Infinity` are not JSON either), or not UTF-8;
  - nested deeper than `MAX_DEPTH` arrays/objects (msgpack, the wire format, stops at 512,
    and Python's parser at about 1000 with a RecursionError);
  - a string holding a lone UTF-16 surrogate (`"\\ud800"`), which no UTF-8 encoder accepts;
  - an integer outside the 64-bit range msgpack can carry (-2^63 .. 2^64-1); the error names
    the field that holds it (`seed`, `messages[0].content[1].x`), found by a second parse.

The gateway's app turns aiohttp's own decompression off (gateway/app.py), so that this module
sees every coding and answers for each.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from typing import Any

from aiohttp import web

from gateway.errors import ApiError

MAX_DEPTH = 64
MAX_CODINGS = 2  # codings one body may stack (Content-Encoding: gzip, deflate)
INT_MIN, INT_MAX = -(1 << 63), (1 << 64) - 1
# zlib's wbits per coding: 31 reads a gzip header, 15 a zlib (RFC 1950) one
CODINGS = {"gzip": 31, "x-gzip": 31, "deflate": 15}


def invalid(why: str) -> ApiError:
    return ApiError(400, f"body is not valid JSON: {why}", code="invalid_json")


def too_large(limit: int, size: int | None = None) -> ApiError:
    """The 413 of a body over `limit` bytes (`size`, when the client said it)."""
    got = "" if size is None else f" ({size} bytes)"
    return ApiError(413, f"request body is more than {limit} bytes{got}", code="body_too_large")


async def read_json(request: web.Request, limit: int, timeout: float = 0.0) -> Any:
    """The JSON value of `request`'s body, decoded from its Content-Encoding (see above)."""
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit, request.content_length)
    try:
        async with asyncio.timeout(timeout or None):
            raw = await request.read()  # the app's client_max_size is `limit`
    except web.HTTPRequestEntityTooLarge:
        raise too_large(limit) from None
    except TimeoutError:
        raise ApiError(408, f"the request body did not arrive within {timeout:g} s",
                       code="body_timeout") from None
    return parse_json(decode(raw, request.headers.get("Content-Encoding", ""), limit))


def decode(raw: bytes, encoding: str, limit: int) -> bytes:
    """`raw` with the codings of a Content-Encoding header undone, last applied first."""
    codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
    if len(codings) > MAX_CODINGS:
        raise ApiError(400, f"Content-Encoding lists {len(codings)} codings; at most "
                       f"{MAX_CODINGS} are undone", code="unsupported_encoding")
    for coding in reversed(codings):
        if coding == "identity":
            continue
        if coding not in CODINGS:
            raise ApiError(400, f"Content-Encoding {coding!r} is not supported; send the body "
                           "uncompressed, gzip or deflate", code="unsupported_encoding")
        raw = _inflate(raw, coding, limit)
    return raw


def _inflate(raw: bytes, coding: str, limit: int) -> bytes:
    wbits = CODINGS[coding]
    if coding == "deflate" and raw and raw[0] & 0xF != 8:
        wbits = -15  # raw deflate without the zlib header: some clients send it (aiohttp's rule)
    out = bytearray()
    try:
        while raw:  # a gzip body may hold several members, one after another
            inflater = zlib.decompressobj(wbits)
            out += inflater.decompress(raw, limit + 1 - len(out))  # stop one byte past it
            if len(out) > limit:
                raise too_large(limit)
            if not inflater.eof:
                raise _undecodable(coding, "the compressed data ends early")
            raw = inflater.unused_data
    except zlib.error as exc:
        raise _undecodable(coding, str(exc)) from None
    return bytes(out)


def _undecodable(coding: str, why: str) -> ApiError:
    return ApiError(400, f"body is not valid {coding} (its Content-Encoding): {why}",
                    code="invalid_body")


def _int(text: str) -> int:
    value = int(text)
    if not INT_MIN <= value <= INT_MAX:
        raise OverflowError(text)
    return value


class _TooBig(int):
    """An integer `_overflow_path` found outside the range."""


def _overflow_path(raw: bytes) -> str:
    """The path of the first integer outside the range in `raw` (valid JSON but for it), ""
    when it is at the top."""
    def mark(text: str) -> int:
        value = int(text)
        return value if INT_MIN <= value <= INT_MAX else _TooBig(value)

    def find(value: Any, path: str) -> str | None:
        if isinstance(value, _TooBig):
            return path
        items = value.items() if isinstance(value, dict) else enumerate(value) \
            if isinstance(value, list) else ()
        for key, item in items:
            sub = f"{path}.{key}" if isinstance(key, str) else f"{path}[{key}]"
            if (found := find(item, sub)) is not None:
                return found
        return None

    try:
        return (find(json.loads(raw, parse_int=mark), "") or "").lstrip(".")
    except (ValueError, RecursionError):
        return ""


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")  # Python's parser would take it


def json_object(body: Any) -> dict[str, Any]:
    """`body`, a decoded request body, if it is a JSON object: every endpoint takes one."""
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object", code="invalid_json")
    return body


def parse_json(raw: bytes) -> Any:
    try:
        body = json.loads(raw, parse_int=_int, parse_constant=_constant)
    except OverflowError as exc:
        path = _overflow_path(raw)
        raise ApiError(400, f"{path + ': ' if path else ''}the integer {str(exc)[:40]} is "
                       "outside the 64-bit range", param=path or None,
                       code="invalid_value" if path else "invalid_json") from None
    except RecursionError:
        raise invalid("nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid(str(exc)) from None
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _depth(body) > MAX_DEPTH:
        raise invalid(f"nested deeper than {MAX_DEPTH} levels")
    if b"\\ud" in raw.lower():  # \ud800-\udfff escapes may leave lone surrogates behind
        try:
            json.dumps(body, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise invalid("a string holds a lone UTF-16 surrogate") from None
    return body


def _depth(value: Any) -> int:
    """Deepest nesting of arrays and objects in `value` (iterative: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return deepest
