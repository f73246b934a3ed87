"""JSON on the hot path: orjson where it can, the standard library where it cannot.

Every row encodes one request body, decodes one answer and re-encodes the answer's metadata;
orjson does each several times faster than :mod:`json`. It refuses a few things the standard
library accepts (NaN, non-UTF-8 bytes, non-string keys) and reads integers beyond 64 bits as
floats, losing digits; those go to :mod:`json`, so the results never depend on which one ran.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_STRICT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_LENIENT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON; TypeError for a value JSON cannot hold (a request body)."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError: big int, non-str key, unknown type
        return _STRICT.encode(value).encode()


def dumps_text(value: Any) -> str:
    """Compact JSON text, values JSON cannot hold written as ``str(value)`` (metadata)."""
    try:
        return orjson.dumps(value, default=str).decode()
    except TypeError:
        return _LENIENT.encode(value)


_DIGITS = b"0123456789"
_LONG_NUMBER = re.compile(rb"[0-9][0-9]{18}")  # could be an integer orjson would round


def loads(data: bytes | str) -> Any:
    """Decode JSON; raises ValueError (:class:`json.JSONDecodeError`) when it is not JSON."""
    raw = data.encode() if isinstance(data, str) else data
    # A body with fewer than 19 digits in all cannot hold a 64-bit overflow (cheap to count).
    if len(raw) - len(raw.translate(None, _DIGITS)) < 19 or not _LONG_NUMBER.search(raw):
        try:
            return orjson.loads(raw)
        except ValueError:  # orjson.JSONDecodeError: invalid, or valid but beyond orjson
            pass
    return json.loads(data)
