"""Times as the service writes them in JSON: UTC with a `Z`, in one of two precisions.

Both are on the wire, and each route keeps the one it has always sent: whole seconds for the
snapshot, the pages, `/readyz` and `/webhook-events`; microseconds for `/sync-runs`, the
`/resync` answer and provisioning records."""

from __future__ import annotations

from datetime import datetime


def iso(value: datetime | None) -> str | None:
    """Whole seconds: `2026-03-04T05:06:07Z`."""
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else None


def iso_microseconds(value: datetime | None) -> str | None:
    """Microseconds: `2026-03-04T05:06:07.123456Z`."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if value is not None else None
