"""Checks of the addresses the service is configured with: an Intercom base URL that would send
the token in clear text, a loopback host, a SQLite URL that lives only in memory. Pure
functions of one value, beside the Settings class (app/settings/__init__.py) that uses them.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


def is_in_memory_sqlite(url: str) -> bool:
    """`sqlite://`, `sqlite:///:memory:` and `file:…?mode=memory` URIs."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return False
    if parsed.get_backend_name() != "sqlite":
        return False
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file::memory:"):
        return True
    query = {key.lower(): value for key, value in parsed.query.items()}
    mode = query.get("mode")
    if mode == "memory" or (isinstance(mode, tuple) and "memory" in mode):
        return True
    return "mode=memory" in database.lower()


def is_loopback_host(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_insecure_base_url(url: str) -> bool:
    """Plain http:// to a host other than loopback: the access token would travel in clear."""
    parts = urlsplit(url)
    return parts.scheme == "http" and not is_loopback_host(parts.hostname or "")
