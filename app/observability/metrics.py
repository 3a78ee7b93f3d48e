"""Prometheus metrics. Counters and histograms live in one process-wide registry; the gauges
that describe the store (version, freshness, backlog) are read from the database at scrape
time, so every replica reports the same shared truth."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

SYNC_RUNS = Counter(
    "intercom_sync_runs_total",
    "Sync runs finished, by trigger and final status.",
    ["trigger", "status"],
    registry=REGISTRY,
)
SYNC_DURATION = Histogram(
    "intercom_sync_run_duration_seconds",
    "Wall time of sync runs, from start to finish.",
    ["status"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
    registry=REGISTRY,
)
WEBHOOKS = Counter(
    "intercom_webhooks_total",
    "Webhook deliveries received, by outcome.",
    ["outcome"],
    registry=REGISTRY,
)
WEBHOOK_EVENTS_APPLIED = Counter(
    "intercom_webhook_events_processed_total",
    "Inbox events processed by the applier, by result.",
    ["result"],
    registry=REGISTRY,
)
APPLY_LAG = Histogram(
    "intercom_webhook_apply_lag_seconds",
    "Time from receipt of a webhook to its application to the store.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
INTERCOM_REQUESTS = Counter(
    "intercom_api_requests_total",
    "Calls to Intercom's REST API, by endpoint and HTTP status (or error kind).",
    ["endpoint", "status"],
    registry=REGISTRY,
)
PROVISIONING_REQUESTS = Counter(
    "intercom_sync_provisioning_requests_total",
    "Provisioning requests, by action and result (`replayed` for a repeated "
    "Idempotency-Key answered from its first answer).",
    ["action", "result"],
    registry=REGISTRY,
)
