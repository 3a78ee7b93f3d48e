"""Provisioning-request records; the per-team write lock is in app.store.locks.

A record is inserted before Intercom is called and finished after. With an `Idempotency-Key`
the insert itself claims the key: the unique constraint on (key, token fingerprint) makes two
requests racing with one key, on any replicas, end with one claim; the loser reads the
winner's record.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.store.engine import Database
from app.store.models import ProvisioningRequest, utcnow

logger = logging.getLogger(__name__)

# A record still unfinished this long after it started lost its process (a request is
# bounded by Intercom's 30 s retry budget and the team lock's wait).
ABANDON_AFTER = timedelta(minutes=10)


@dataclass(frozen=True)
class RequestRecord:
    """A provisioning request as stored (app/api/provisioning.py renders it)."""

    id: int
    action: str
    user_id: str
    team_id: str | None
    dry_run: bool
    result: str | None
    requested_at: datetime
    finished_at: datetime | None
    requested_by: str
    request_hash: str
    intercom_method: str | None
    intercom_path: str | None
    intercom_body: dict[str, Any] | None
    intercom_status: int | None
    http_status: int | None
    error_code: str | None
    error_message: str | None

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


def _record(row: ProvisioningRequest) -> RequestRecord:
    return RequestRecord(
        id=row.id,
        action=row.action,
        user_id=row.user_id,
        team_id=row.team_id,
        dry_run=row.dry_run,
        result=row.result,
        requested_at=row.requested_at,
        finished_at=row.finished_at,
        requested_by=row.requested_by,
        request_hash=row.request_hash,
        intercom_method=row.intercom_method,
        intercom_path=row.intercom_path,
        intercom_body=row.intercom_body,
        intercom_status=row.intercom_status,
        http_status=row.http_status,
        error_code=row.error_code,
        error_message=row.error_message,
    )


# Closes a record inside the caller's store transaction.
FinishFn = Callable[[Session], RequestRecord]
# The Intercom call a request made (or would make): method, path, JSON body, status.
IntercomCall = tuple[str, str, dict[str, Any] | None, int | None]


def token_fingerprint(token: str) -> str:
    """First 12 hex digits of sha256(token): tells tokens apart in the audit, reveals none."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Claim:
    """The outcome of starting a request: a new record, or the record that holds its key."""

    record: RequestRecord
    created: bool


def start_request(
    db: Database,
    *,
    action: str,
    user_id: str,
    team_id: str | None,
    dry_run: bool,
    requested_by: str,
    request_hash: str,
    idempotency_key: str | None,
) -> Claim:
    """Insert the record of a new request, or return the record that already holds
    `idempotency_key` for this token (the caller compares hashes and states)."""
    for _ in range(3):
        if idempotency_key is not None:
            existing = _by_key(db, idempotency_key, requested_by)
            if existing is not None and not existing.finished:
                cutoff = utcnow() - ABANDON_AFTER
                if existing.requested_at < cutoff:
                    with db.writing() as session:
                        abandon_unfinished(session, older_than=cutoff)
                    existing = _by_key(db, idempotency_key, requested_by)
            if existing is not None:
                return Claim(existing, created=False)
        try:
            with db.writing() as session:
                row = ProvisioningRequest(
                    action=action,
                    user_id=user_id,
                    team_id=team_id,
                    dry_run=dry_run,
                    requested_at=utcnow(),
                    requested_by=requested_by,
                    idempotency_key=idempotency_key,
                    request_hash=request_hash,
                )
                session.add(row)
                session.flush()
                return Claim(_record(row), created=True)
        except IntegrityError:
            continue  # another request claimed the key between our read and our insert
    raise RuntimeError("could not record the provisioning request: its key kept changing")


def _by_key(db: Database, key: str, requested_by: str) -> RequestRecord | None:
    with db.reading() as session:
        row = session.execute(
            select(ProvisioningRequest).where(
                ProvisioningRequest.idempotency_key == key,
                ProvisioningRequest.requested_by == requested_by,
            )
        ).scalar_one_or_none()
        return _record(row) if row is not None else None


def finish_request(
    session: Session,
    request_id: int,
    *,
    result: str,
    http_status: int,
    intercom: IntercomCall | None,
    error: tuple[str, str] | None,
    release_key: bool = False,
) -> RequestRecord:
    """Close a record inside the caller's transaction, so that a confirmed change and its
    record commit together. `release_key` frees the idempotency key (a transient failure:
    a retry with the same key should try again, not be told of the failure)."""
    row = session.get_one(ProvisioningRequest, request_id)
    row.result = result
    row.finished_at = utcnow()
    row.http_status = http_status
    if intercom is not None:
        row.intercom_method, row.intercom_path, row.intercom_body, row.intercom_status = intercom
    if error is not None:
        row.error_code, row.error_message = error
    if release_key:
        row.idempotency_key = None
    session.flush()
    return _record(row)


def list_requests(session: Session, *, limit: int) -> list[RequestRecord]:
    rows = session.execute(
        select(ProvisioningRequest).order_by(ProvisioningRequest.id.desc()).limit(limit)
    ).scalars()
    return [_record(row) for row in rows]


def abandon_unfinished(session: Session, *, older_than: datetime) -> int:
    """Close records left in progress by a process that died (their key stays claimed: the
    write may have reached Intercom, so the next baseline, not a retry, settles it)."""
    result = session.execute(
        update(ProvisioningRequest)
        .where(
            ProvisioningRequest.finished_at.is_(None),
            ProvisioningRequest.requested_at < older_than,
        )
        .values(
            result="failed",
            finished_at=utcnow(),
            http_status=500,
            error_code="request_abandoned",
            error_message="the process handling this request stopped before it finished",
        )
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
