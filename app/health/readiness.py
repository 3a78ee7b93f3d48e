"""What `/readyz` reports: whether C1 can be served, and every known problem (no secrets)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from app.settings import Settings
from app.store import inbox, sync_runs
from app.store.activity import read_cursor
from app.store.engine import Database
from app.store.models import utcnow
from app.store.versioning import read_header

INBOX_LAG_LIMIT = timedelta(seconds=60)


@dataclass
class Readiness:
    """What the check found; `app/api/rendering.py` writes it as `/readyz` answers."""

    ready: bool
    version: int | None = None
    last_sync_at: datetime | None = None
    last_webhook_at: datetime | None = None
    inbox_backlog: int | None = None
    problems: list[str] = field(default_factory=list)
    activity_log_read_to: datetime | None = None


def check_readiness(db: Database, settings: Settings) -> Readiness:
    try:
        with db.reading() as session:
            header = read_header(session)
            last_run = sync_runs.latest_finished_run(session)
            backlog = inbox.backlog(session)
            activity_log = read_cursor(session)
    except Exception:
        return Readiness(ready=False, problems=["store_unreachable"])
    now = utcnow()
    problems: list[str] = []
    if header.last_sync_at is None:
        problems.append("never_synced")
    if settings.intercom_access_token is None:
        problems.append("intercom_not_configured")
    if last_run is not None:
        if last_run.error_code == "intercom_auth_failed":
            problems.append("auth_failed")
        elif last_run.error_code == "intercom_plan_restricted":
            problems.append("plan_restricted")
        elif last_run.error_code == "config_invalid":
            problems.append("config_invalid")
        elif last_run.error_code == "workspace_changed":
            problems.append("workspace_changed")
        elif last_run.status == sync_runs.RunStatus.BLOCKED:
            problems.append("blocked_mass_removal")
        elif last_run.status == sync_runs.RunStatus.FAILED:
            problems.append("sync_failing")
    interval = settings.reconcile_interval_seconds
    if (
        header.last_sync_at is not None
        and interval > 0
        and now - header.last_sync_at > timedelta(seconds=2 * interval)
    ):
        problems.append("sync_stale")
    if (
        backlog.oldest_received_at is not None
        and now - backlog.oldest_received_at > INBOX_LAG_LIMIT
    ):
        problems.append("inbox_lagging")
    if settings.intercom_client_secret is None:
        problems.append("webhooks_not_configured")
    if settings.activity_log_enabled and activity_log.error_code is not None:
        problems.append(activity_log.error_code)
    return Readiness(
        ready=header.last_sync_at is not None,
        version=header.version,
        last_sync_at=header.last_sync_at,
        last_webhook_at=header.last_webhook_at,
        inbox_backlog=backlog.pending,
        problems=problems,
        activity_log_read_to=activity_log.read_to,
    )
