"""Intercom webhook signatures: ``X-Hub-Signature: sha1=<hex>`` over the raw body bytes.

The HMAC is computed over the bytes exactly as received; re-serialising the JSON changes them
and must not verify (reliability rule R1).

The header is attacker-controlled: it is parsed strictly (one header, ``sha1=`` and exactly 40
hex digits, ASCII only) before anything is compared, so no value can do more than fail.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence

SIGNATURE_HEADER = "X-Hub-Signature"
_PREFIX = "sha1="
# str.isdigit-style checks accept non-ASCII digits; a byte pattern on ASCII-encoded text cannot.
_HEX_SHA1 = re.compile(rb"[0-9a-fA-F]{40}")


class SignatureRefused(Exception):
    """Why a delivery's signature was not accepted; the message is safe to answer with."""


def sign_body(body: bytes, client_secret: str) -> str:
    """The header value Intercom sends for ``body``."""
    digest = hmac.new(client_secret.encode(), body, hashlib.sha1).hexdigest()
    return _PREFIX + digest


def claimed_digest(header_values: Sequence[str]) -> bytes:
    """The HMAC digest that the ``X-Hub-Signature`` header(s) claim, or SignatureRefused.

    ``header_values`` are every value of the header as the server decoded them (latin-1, so
    any byte arrives as one character).
    """
    if not header_values:
        raise SignatureRefused("X-Hub-Signature is missing")
    if len(header_values) > 1:
        raise SignatureRefused("X-Hub-Signature is sent more than once")
    value = header_values[0].strip()
    if not value:
        raise SignatureRefused("X-Hub-Signature is missing")
    if not value.startswith(_PREFIX):
        raise SignatureRefused("X-Hub-Signature must start with sha1=")
    try:
        hex_digest = value[len(_PREFIX) :].strip().encode("ascii")
    except UnicodeEncodeError:
        raise SignatureRefused("X-Hub-Signature must be sha1= and 40 hex digits") from None
    if _HEX_SHA1.fullmatch(hex_digest) is None:
        raise SignatureRefused("X-Hub-Signature must be sha1= and 40 hex digits")
    return bytes.fromhex(hex_digest.decode("ascii"))


def check_signature(body: bytes, header_values: Sequence[str], client_secret: str) -> None:
    """Raise SignatureRefused unless ``header_values`` hold the HMAC of ``body``
    (compared in constant time)."""
    claimed = claimed_digest(header_values)
    expected = hmac.new(client_secret.encode(), body, hashlib.sha1).digest()
    if not hmac.compare_digest(claimed, expected):
        raise SignatureRefused("X-Hub-Signature does not match the body")


def signature_is_valid(body: bytes, header_value: str | None, client_secret: str) -> bool:
    """Whether one header value is the signature of ``body`` (for callers with one value)."""
    try:
        check_signature(body, [] if header_value is None else [header_value], client_secret)
    except SignatureRefused:
        return False
    return True
