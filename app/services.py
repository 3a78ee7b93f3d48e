"""The long-lived parts of one process, built in the app's lifespan and shared by routes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from app.activity.reader import ActivityLogReader
from app.intercom.client import intercom_client_factory
from app.settings import Settings
from app.snapshot.cache import SnapshotCache
from app.store.engine import Database
from app.store.versioning import read_header
from app.sync.coordinator import SyncCoordinator
from app.webhooks.inbox_drainer import InboxDrainer
from app.webhooks.inbox_writer import InboxWriter

WORKSPACE_RECHECK_SECONDS = 5.0


def build_coordinator(db: Database, settings: Settings) -> SyncCoordinator:
    """The sync coordinator with the activity-log read after each successful baseline (when
    enabled and Intercom is configured), for the service and `intercom-sync sync` alike."""
    client_factory = intercom_client_factory(settings)
    reader = (
        ActivityLogReader(db, settings, client_factory)
        if client_factory is not None and settings.activity_log_enabled
        else None
    )
    return SyncCoordinator(
        db, settings, client_factory, after_baseline=reader.read if reader is not None else None
    )


@dataclass
class Services:
    settings: Settings
    db: Database
    coordinator: SyncCoordinator
    inbox_writer: InboxWriter
    inbox_drainer: InboxDrainer
    snapshots: SnapshotCache
    metrics_registry: CollectorRegistry
    _workspace_id: str | None = None
    _workspace_checked_at: float = field(default=0.0)

    def known_workspace_id(self) -> str | None:
        """The workspace id when it is already known (configured or learned); never blocks, so
        the webhook route can skip the threadpool once the id is known."""
        return self.settings.intercom_workspace_id or self._workspace_id

    def expected_workspace_id(self) -> str | None:
        """The workspace whose webhooks we apply: configured, or learned from `GET /me`.

        Blocking (it may read the store); cached, and re-read every few seconds until known."""
        if self.settings.intercom_workspace_id:
            return self.settings.intercom_workspace_id
        if self._workspace_id is not None:
            return self._workspace_id
        now = time.monotonic()
        if now - self._workspace_checked_at >= WORKSPACE_RECHECK_SECONDS:
            self._workspace_checked_at = now
            with self.db.reading() as session:
                self._workspace_id = read_header(session).workspace_id
        return self._workspace_id
