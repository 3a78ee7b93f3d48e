"""Gauges read from the store at scrape time: the version, freshness and the inbox backlog
are shared by every replica, so each scrape reports the same truth."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.store import inbox
from app.store.engine import Database
from app.store.models import utcnow
from app.store.versioning import read_header


class StoreCollector(Collector):
    def __init__(self, db: Database) -> None:
        self._db = db

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("intercom_sync_store_up", "1 when the store answered the scrape.")
        try:
            with self._db.reading() as session:
                header = read_header(session)
                backlog = inbox.backlog(session)
        except Exception:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        now = utcnow()
        yield GaugeMetricFamily(
            "intercom_sync_store_version",
            "Current store version (bumps on every change).",
            value=header.version,
        )
        since = GaugeMetricFamily(
            "intercom_sync_seconds_since_last_success",
            "Seconds since the last successful baseline (absent before the first).",
        )
        if header.last_sync_at is not None:
            since.add_metric([], (now - header.last_sync_at).total_seconds())
        yield since
        yield GaugeMetricFamily(
            "intercom_sync_inbox_backlog",
            "Webhook events stored but not yet applied.",
            value=backlog.pending,
        )
        age = backlog.oldest_received_at
        yield GaugeMetricFamily(
            "intercom_sync_inbox_oldest_pending_seconds",
            "Age of the oldest unapplied webhook event (0 when none).",
            value=(now - age).total_seconds() if age is not None else 0.0,
        )


def build_store_registry(db: Database) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(db))
    return registry
