"""Bearer-token checks for the C1 read API and the operator endpoints."""

from __future__ import annotations

import hmac

from fastapi import Request
from pydantic import SecretStr

from app.api.errors import ApiError

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _bearer(request: Request) -> str | None:
    return bearer_token(request.headers.get("authorization"))


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value, else None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def token_matches(presented: str, allowed: list[SecretStr]) -> bool:
    """Constant-time comparison against every allowed token (no early exit on a match)."""
    matched = False
    presented_bytes = presented.encode()
    for token in allowed:
        matched |= hmac.compare_digest(presented_bytes, token.get_secret_value().encode())
    return matched


def require_token(request: Request, allowed: list[SecretStr], *, kind: str, variable: str) -> None:
    presented = _bearer(request)
    if not allowed:
        raise ApiError(
            401,
            "unauthorized",
            f"no {kind} tokens are configured ({variable} is empty)",
            headers=_CHALLENGE,
        )
    if presented is None:
        raise ApiError(
            401,
            "unauthorized",
            f"missing bearer token: send 'Authorization: Bearer <{kind} token>'",
            headers=_CHALLENGE,
        )
    if not token_matches(presented, allowed):
        raise ApiError(
            401, "unauthorized", f"the bearer token is not a valid {kind} token", headers=_CHALLENGE
        )
