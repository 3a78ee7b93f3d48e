"""Text from Intercom, made storable on the way in.

PostgreSQL refuses NUL in text, and neither driver can encode a lone UTF-16 surrogate, which a
JSON body may carry as an escape (`"\\ud800"`). One such character in one teammate's name used
to fail every baseline. Every text field Intercom sends goes through `storable_text`, on the
baseline and the webhook paths alike, so both backends store exactly the same string.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

# Control characters (C0, DEL and C1) other than tab and newline, and surrogates.
_UNSTORABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def storable_text(value: str) -> str:
    """`value` without control characters (tab and newline kept), its unpaired surrogates
    replaced by U+FFFD; two surrogates that make a pair are joined into their character."""
    # Nearly every string is printable: one C-speed check and the string itself comes back.
    if value.isprintable() or _UNSTORABLE.search(value) is None:
        return value
    if _SURROGATE.search(value) is not None:
        value = value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return _UNSTORABLE.sub("", value)


def is_storable(value: str) -> bool:
    """Whether `storable_text` would leave `value` as it is."""
    return value.isprintable() or _UNSTORABLE.search(value) is None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads_json(body: bytes | str) -> Any:
    """Parse JSON like `orjson.loads`, but also take a body whose strings carry an unpaired
    surrogate escape, which orjson refuses as a whole: that body is read by the standard
    library (only then, so the usual body costs nothing more), and its text is made storable
    by `storable_text` where it is used. Raises orjson.JSONDecodeError as orjson does."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if b"\\u" not in (body if isinstance(body, bytes) else body.encode("utf-8", "replace")):
            raise
        try:
            # NaN and Infinity stay refused, as orjson refuses them.
            return json.loads(body, parse_constant=_refuse_constant)
        except ValueError:
            raise exc from None
