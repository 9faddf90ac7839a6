"""Request bodies as JSON values that every later hop can carry.

`parse_json(raw)` returns the JSON value of a body, or raises `ApiError` 400 (code
`invalid_json`) naming the problem, for anything the mesh could not pass on intact:
- not JSON, or not UTF-8;
- nested deeper than `MAX_DEPTH` arrays/objects (msgpack, the wire format, stops at 512, and
  Python's parser at about 1000 with a RecursionError);
- a string holding a lone UTF-16 surrogate (`"\\ud800"`), which no UTF-8 encoder accepts;
- an integer outside the 64-bit range msgpack can carry (-2^63 .. 2^64-1).
"""

from __future__ import annotations

import json
from typing import Any

from gateway.errors import ApiError

MAX_DEPTH = 64
INT_MIN, INT_MAX = -(1 << 63), (1 << 64) - 1


def invalid(why: str) -> ApiError:
    return ApiError(400, f"body is not valid JSON: {why}", code="invalid_json")


def _int(text: str) -> int:
    value = int(text)
    if not INT_MIN <= value <= INT_MAX:
        raise OverflowError(text)
    return value


def parse_json(raw: bytes) -> Any:
    try:
        body = json.loads(raw, parse_int=_int)
    except OverflowError as exc:
        raise invalid(f"the integer {str(exc)[:40]} is outside the 64-bit range") from None
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
