"""Stage 3, the inbox drainer: drains the inbox in the background, in batches, in
notification order, applying each notification with `apply_notification`.

A batch is one transaction: claim due events, apply each, record the changes under one new
version and mark every event, then commit. If anything in a batch fails, the batch is rolled
back and replayed with a savepoint per event, so one bad event is retried (with backoff) or
failed alone while the rest apply. Events left pending by a crash are simply claimed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.intercom.notifications import parse_notification
from app.observability.metrics import APPLY_LAG, WEBHOOK_EVENTS_APPLIED
from app.settings import Settings
from app.store import inbox, sync_runs
from app.store.engine import Database, describe_error
from app.store.inbox import InboxStatus
from app.store.models import utcnow
from app.store.versioning import (
    ChangeSet,
    lock_store_state,
    prune_change_log,
    read_store_state,
    record_changes,
)
from app.store.workset import TeammateWorkset
from app.webhooks.activity_evidence import apply_webhook_entries
from app.webhooks.apply_notification import ApplyOutcome, EventOutcome, apply_notification

logger = logging.getLogger(__name__)

BATCH_SIZE = 500
MAX_ATTEMPTS = 8
POLL_SECONDS = 1.0
# Under a stream of deliveries, the least time between two drains. Woken by every inbox
# writer commit, the drainer would otherwise take the write lock (and pay a commit) for every
# handful of events, and the writer would wait behind it; pausing lets events gather into
# batches.
# Only after a busy drain: at a trickle every delivery is still applied (and versioned) at once.
APPLY_SPACING_SECONDS = 0.05
BUSY_DRAIN_EVENTS = 20
PRUNE_EVERY = timedelta(hours=1)


@dataclass
class BatchResult:
    claimed: int = 0
    # An event that can change access asked for a refresh.
    needs_refresh: bool = False
    # Notifications about teammates not known yet were deferred, and no run fetches after
    # they arrived (nor was one queued within the refresh window): a refresh may bring the
    # teammates. This is when the earliest of them arrived.
    unknown_since: datetime | None = None


def apply_pending_batch(
    db: Database,
    *,
    expected_app_id: str | None,
    limit: int = BATCH_SIZE,
    refresh_window_seconds: float = 0.0,
) -> BatchResult:
    """Apply one batch of due inbox events; returns what happened. `refresh_window_seconds`
    is the least time between two refreshes asked for by deferred notifications."""
    window = timedelta(seconds=refresh_window_seconds)
    try:
        return _apply_batch(
            db, expected_app_id=expected_app_id, limit=limit, isolate=False, window=window
        )
    except Exception as exc:
        # A refused statement needs no traceback (and its message names no values: the
        # engine hides them); anything else is a bug worth one.
        logger.warning(
            "a webhook batch failed (%s); replaying it event by event",
            describe_error(exc),
            exc_info=not isinstance(exc, StatementError),
        )
        return _apply_batch(
            db, expected_app_id=expected_app_id, limit=limit, isolate=True, window=window
        )


def _apply_batch(
    db: Database, *, expected_app_id: str | None, limit: int, isolate: bool, window: timedelta
) -> BatchResult:
    result = BatchResult()
    lags: list[float] = []
    with db.writing() as session:
        now = utcnow()
        if not (expected_app_id or read_store_state(session).workspace_id):
            # Until a baseline has told us our workspace, a notification cannot be told apart
            # from another workspace's: hold them all (the snapshot is not served yet anyway).
            return result
        events = inbox.claim_pending(session, limit=limit, now=now)
        if not events:
            return result
        state = lock_store_state(session)
        app_id = expected_app_id or state.workspace_id
        version = state.version + 1
        changes = ChangeSet()
        marks: list[dict[str, Any]] = []
        apply = _apply_each_alone if isolate else _apply_together
        outcomes = apply(session, events, version=version, now=now, app_id=app_id)
        changes.merge(
            apply_webhook_entries(
                session,
                (o.activity_entry for o, _ in outcomes if o is not None and o.activity_entry),
                version=version,
                now=now,
            )
        )
        # Read once, and only by a batch with a deferred event.
        last_run: list[sync_runs.RunView | None] = []
        for event, (outcome, error) in zip(events, outcomes, strict=True):
            marks.append(_mark(event, outcome, error, now))
            if outcome is None:
                continue
            changes.merge(outcome.changes)
            if outcome.status != ApplyOutcome.DEFERRED:
                result.needs_refresh |= outcome.needs_refresh
                lags.append((now - event.received_at).total_seconds())
            elif outcome.needs_refresh:
                if not last_run:
                    last_run.append(sync_runs.latest_run(session))
                if _unknown_needs_refresh(
                    last_run[0], received_at=event.received_at, now=now, window=window
                ):
                    since = result.unknown_since
                    result.unknown_since = min(since or event.received_at, event.received_at)
        inbox.mark_events(session, marks)
        newest = max(event.received_at for event in events)
        if state.last_webhook_at is None or state.last_webhook_at < newest:
            state.last_webhook_at = newest
        record_changes(session, state, changes, at=now)
        result.claimed = len(events)
    for lag in lags:
        APPLY_LAG.observe(max(0.0, lag))
    for mark in marks:
        WEBHOOK_EVENTS_APPLIED.labels(mark["status"]).inc()
    return result


def _unknown_needs_refresh(
    last_run: sync_runs.RunView | None,
    *,
    received_at: datetime,
    now: datetime,
    window: timedelta,
) -> bool:
    """Whether a deferred notification about an unknown teammate should ask for a refresh.
    It is retried with backoff until the teammate is known, and each retry would otherwise
    ask again. A run queued (on any replica) within the window is as recent as refreshes for
    such notifications get; one that fetches after the notification arrived is all a refresh
    could do for it."""
    if last_run is not None and last_run.queued_at > now - window:
        return False
    return not sync_runs.fetches_after(last_run, received_at)


Outcomes = list[tuple[EventOutcome | None, str | None]]


def _apply_together(
    session: Session,
    events: list[inbox.PendingEvent],
    *,
    version: int,
    now: datetime,
    app_id: str | None,
) -> Outcomes:
    """Apply the whole batch through one workset: the teammates and teams it names are read
    in a few queries and written back in a few statements. Any error fails the batch (and
    the caller replays it event by event)."""
    notifications = [parse_notification(event.raw_body) for event in events]
    workset = TeammateWorkset(session)
    workset.load(
        (n.teammate.id for n in notifications if n.teammate is not None),
        (tid for n in notifications if n.teammate is not None for tid in n.teammate.team_ids),
    )
    outcomes: Outcomes = [
        (
            apply_notification(
                workset,
                notification,
                version=version,
                now=now,
                expected_app_id=app_id,
                received_at=event.received_at,
            ),
            None,
        )
        for event, notification in zip(events, notifications, strict=True)
    ]
    workset.flush()
    return outcomes


def _apply_each_alone(
    session: Session,
    events: list[inbox.PendingEvent],
    *,
    version: int,
    now: datetime,
    app_id: str | None,
) -> Outcomes:
    """Apply each event under a savepoint of its own, so a failing one is rolled back (and
    retried or failed) alone while the rest of the batch applies."""
    outcomes: Outcomes = []
    for event in events:
        savepoint = session.begin_nested()
        try:
            workset = TeammateWorkset(session)
            outcome = apply_notification(
                workset,
                parse_notification(event.raw_body),
                version=version,
                now=now,
                expected_app_id=app_id,
                received_at=event.received_at,
            )
            workset.flush()
        except Exception as exc:
            savepoint.rollback()
            # Recorded in /webhook-events: no SQL text, no bound values.
            reason = describe_error(exc)
            logger.warning("webhook event %s failed: %s", event.notification_id, reason)
            outcomes.append((None, reason))
            continue
        savepoint.commit()
        outcomes.append((outcome, None))
    return outcomes


def _mark(
    event: inbox.PendingEvent, outcome: EventOutcome | None, error: str | None, now: datetime
) -> dict[str, Any]:
    attempts = event.attempts + 1
    if outcome is not None and outcome.status != ApplyOutcome.DEFERRED:
        return {
            "id": event.id,
            "status": InboxStatus(outcome.status),
            "error": outcome.reason,
            "attempts": attempts,
            "next_attempt_at": None,
            "applied_at": now,
        }
    reason = error or (outcome.reason if outcome else None)
    if attempts >= MAX_ATTEMPTS:
        final = InboxStatus.FAILED if error else InboxStatus.IGNORED
        return {
            "id": event.id,
            "status": final,
            "error": reason,
            "attempts": attempts,
            "next_attempt_at": None,
            "applied_at": now,
        }
    return {
        "id": event.id,
        "status": InboxStatus.PENDING,
        "error": reason,
        "attempts": attempts,
        "next_attempt_at": now + inbox.retry_delay(attempts),
        "applied_at": None,
    }


class RefreshRequester(Protocol):
    def __call__(self, *, unknown_since: datetime | None = None) -> None: ...


class InboxDrainer:
    """Background task draining the inbox; woken at once by the inbox writer, polling otherwise
    (for events stored by other replicas and retries that come due)."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        request_refresh: RefreshRequester,
    ) -> None:
        self._db = db
        self._settings = settings
        self._request_refresh = request_refresh
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_prune: datetime | None = None

    def wake_threadsafe(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run())

    async def stop(self) -> None:
        """Stop after the batch in progress (its transaction commits or rolls back whole)."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 15)
            except TimeoutError:
                self._task.cancel()

    async def drain(self) -> int:
        """Apply everything due now; returns how many events were processed."""
        total = 0
        while True:
            result = await run_in_threadpool(
                apply_pending_batch,
                self._db,
                expected_app_id=self._settings.intercom_workspace_id,
                refresh_window_seconds=self._settings.webhook_refresh_debounce_seconds,
            )
            total += result.claimed
            if result.needs_refresh:
                self._request_refresh()
            elif result.unknown_since is not None:
                self._request_refresh(unknown_since=result.unknown_since)
            if result.claimed < BATCH_SIZE or self._stopping:
                return total

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
            self._wake.clear()
            if self._stopping:
                return
            try:
                drained = await self.drain()
                await self._prune_if_due()
            except Exception:
                logger.exception("the inbox drainer hit an error; retrying shortly")
                await asyncio.sleep(POLL_SECONDS)
                continue
            if drained >= BUSY_DRAIN_EVENTS and not self._stopping:
                await asyncio.sleep(APPLY_SPACING_SECONDS)

    async def _prune_if_due(self) -> None:
        now = utcnow()
        if self._last_prune is not None and now - self._last_prune < PRUNE_EVERY:
            return
        self._last_prune = now
        await run_in_threadpool(prune_old_records, self._db, self._settings)


def prune_old_records(db: Database, settings: Settings) -> None:
    """Drop settled inbox rows past their retention and change-log rows past theirs."""
    now = utcnow()
    with db.writing() as session:
        pruned = inbox.prune_events(
            session, older_than=now - timedelta(days=settings.webhook_retention_days)
        )
        logs = prune_change_log(
            session, older_than=now - timedelta(days=settings.change_log_retention_days)
        )
    if pruned or logs:
        logger.info("pruned %d inbox events and %d change-log rows", pruned, logs)
