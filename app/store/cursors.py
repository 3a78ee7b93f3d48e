"""Opaque pagination cursors: the keyset position, bound to one listing and signed with a key
kept in the store (shared by every replica), so a tampered or foreign cursor is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import orjson

from app.store.read_errors import InvalidCursor


def encode_cursor(key: str, listing: str, position: Any) -> str:
    payload = orjson.dumps({"l": listing, "p": position})
    mac = hmac.new(key.encode(), payload, hashlib.sha256).digest()[:12]
    return base64.urlsafe_b64encode(payload + mac).decode().rstrip("=")


def decode_cursor(key: str, listing: str, cursor: str) -> Any:
    """The position inside `cursor`; raises InvalidCursor for anything else."""
    invalid = InvalidCursor("the cursor is not one this listing issued; start again without it")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (ValueError, TypeError):
        raise invalid from None
    if len(raw) <= 12:
        raise invalid
    payload, mac = raw[:-12], raw[-12:]
    expected = hmac.new(key.encode(), payload, hashlib.sha256).digest()[:12]
    if not hmac.compare_digest(mac, expected):
        raise invalid
    try:
        decoded = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise invalid from None
    if not isinstance(decoded, dict) or decoded.get("l") != listing:
        raise invalid
    return decoded.get("p")
