"""Intercom webhook signatures: ``X-Hub-Signature: sha1=<hex>`` over the raw body bytes.

The HMAC is computed over the bytes exactly as received; re-serialising the JSON changes them
and must not verify (reliability rule R1).
"""

import hashlib
import hmac

SIGNATURE_HEADER = "X-Hub-Signature"
_PREFIX = "sha1="


def sign_body(body: bytes, client_secret: str) -> str:
    """The header value Intercom sends for ``body``."""
    digest = hmac.new(client_secret.encode(), body, hashlib.sha1).hexdigest()
    return _PREFIX + digest


def signature_is_valid(body: bytes, header_value: str | None, client_secret: str) -> bool:
    """Constant-time check of ``header_value`` against the HMAC of ``body``."""
    if not header_value or not header_value.startswith(_PREFIX):
        return False
    expected = hmac.new(client_secret.encode(), body, hashlib.sha1).hexdigest()
    return hmac.compare_digest(header_value[len(_PREFIX) :].strip().lower(), expected)
