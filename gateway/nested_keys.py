"""Keys inside a request's nested objects (`response_format.json_schema`, `tools[0].function`,
Responses `input[2]`): one not defined there is a 400 naming its whole path (`param`
`tools[0].function.foo`), code `unknown_parameter`, as an unknown top-level field is
(gateway/api_fields.py). Accepting it would silently ignore what the caller asked for. A key
sent as null is one left out (`given` reads a key so).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from gateway.errors import ApiError


def given(obj: Mapping[str, Any], key: str, default: Any) -> Any:
    """`obj[key]`, or `default` when it is absent or null (null is the same as absent)."""
    value = obj.get(key)
    return default if value is None else value


def check_keys(obj: Mapping[str, Any], known: Collection[str], where: str) -> None:
    """Raise a 400 naming `where.key` for the first key of `obj` not in `known`. A null value
    is skipped: null is the same as leaving a key out (docs/API.md), and clients that dump
    their own objects back (Responses output items) send OpenAI's newer keys as null."""
    for key, value in obj.items():
        if key not in known and value is not None:
            param = f"{where}.{key}"
            raise ApiError(400, f"{param}: unknown key (known: {', '.join(sorted(known))})",
                           param=param, code="unknown_parameter")
