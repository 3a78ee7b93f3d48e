"""The cold routes' JSON, now built from the app/api/schemas.py models, is byte for byte what the
hand-rendered dicts it replaced sent (issue 18.3): the same members in the same order, the same
two timestamp precisions, and a run error's `details` left out, not null, when there are none.
The references below are those dicts as they were."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from app.api import rendering
from app.core.timefmt import iso, iso_microseconds
from app.health.readiness import Readiness
from app.store.models import WebhookEvent
from app.store.sync_runs import EMPTY_STATS, RunView

PROPERTY = settings(max_examples=60, deadline=None)

times = st.none() | st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)
)
texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
ids = st.text(alphabet="0123456789abcdef", min_size=1, max_size=12)


def _old_iso_microseconds(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if value else None


def _old_run_json(run: RunView) -> dict[str, Any]:
    error: dict[str, Any] | None = None
    if run.error_code:
        error = {"code": run.error_code, "message": run.error_message or ""}
        if run.error_details:
            error["details"] = run.error_details
    return {
        "id": run.id,
        "trigger": run.trigger,
        "status": run.status,
        "started_at": _old_iso_microseconds(run.started_at),
        "finished_at": _old_iso_microseconds(run.finished_at),
        "stats": run.stats,
        "error": error,
        "warnings": [dict(warning) for warning in run.warnings],
    }


def _old_readiness_json(state: Readiness) -> dict[str, Any]:
    if not state.ready:
        status = "unavailable"
    else:
        status = "degraded" if state.problems else "ok"
    return {
        "status": status,
        "version": state.version,
        "last_sync_at": iso(state.last_sync_at),
        "last_webhook_at": iso(state.last_webhook_at),
        "inbox_backlog": state.inbox_backlog,
        "problems": state.problems,
        "activity_log_read_to": iso(state.activity_log_read_to),
    }


def _old_from_unix(value: int) -> datetime | None:
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _old_event_json(event: WebhookEvent) -> dict[str, object]:
    created = event.notification_created_at
    return {
        "id": event.notification_id,
        "inbox_id": event.id,
        "topic": event.topic,
        "app_id": event.app_id,
        "teammate_id": event.item_id,
        "created_at": iso(_old_from_unix(created)) if created is not None else None,
        "received_at": iso(event.received_at),
        "applied_at": iso(event.applied_at),
        "outcome": event.status,
        "deliveries": event.deliveries,
        "attempts": event.attempts,
        "error": event.error,
    }


# Members in the order the writers put them (the models write theirs in declaration order).
teammates = st.tuples(ids, st.none() | texts, st.none() | texts).map(
    lambda t: {"id": t[0], "name": t[1], "email": t[2]}
)
warnings = st.tuples(st.sampled_from(["user", "team", "role"]), ids, texts).map(
    lambda t: {"resource_type": t[0], "id": t[1], "reason": t[2]}
)
stats = st.lists(st.integers(0, 10**6), min_size=len(EMPTY_STATS), max_size=len(EMPTY_STATS)).map(
    lambda counts: dict(zip(EMPTY_STATS, counts, strict=True))
)
runs = st.builds(
    RunView,
    id=st.integers(1, 2**31 - 1),
    trigger=st.sampled_from(["startup", "schedule", "operator", "webhook", "cli"]),
    status=st.sampled_from(["queued", "running", "succeeded", "failed", "blocked"]),
    force=st.booleans(),
    queued_at=st.datetimes(),
    started_at=times,
    finished_at=times,
    stats=stats,
    error_code=st.none() | st.just("") | texts,
    error_message=st.none() | texts,
    error_details=st.none()
    | st.just({})
    | st.fixed_dictionaries({"would_remove": st.lists(teammates, max_size=3)}),
    warnings=st.lists(warnings, max_size=3).map(tuple),
)


@PROPERTY
@given(runs)
def test_a_sync_run_is_written_as_before(run: RunView) -> None:
    response = rendering.json_response(rendering.sync_run(run))
    assert response.body == orjson.dumps(_old_run_json(run))


@PROPERTY
@given(st.lists(runs, max_size=4))
def test_a_list_of_sync_runs_is_written_as_before(items: list[RunView]) -> None:
    response = rendering.json_response(rendering.sync_runs(items))
    assert response.body == orjson.dumps({"items": [_old_run_json(run) for run in items]})


@PROPERTY
@given(
    st.builds(
        Readiness,
        ready=st.booleans(),
        version=st.none() | st.integers(0, 2**62),
        last_sync_at=times,
        last_webhook_at=times,
        inbox_backlog=st.none() | st.integers(0, 10**6),
        problems=st.lists(st.sampled_from(["never_synced", "sync_stale", "inbox_lagging"])),
        activity_log_read_to=times,
    )
)
def test_readiness_is_written_as_before(state: Readiness) -> None:
    response = rendering.json_response(rendering.readiness(state))
    assert response.body == orjson.dumps(_old_readiness_json(state))


@PROPERTY
@given(
    st.lists(
        st.builds(
            WebhookEvent,
            id=st.integers(1, 2**62),
            notification_id=st.none() | ids,
            topic=st.none() | texts,
            app_id=st.none() | ids,
            item_id=st.none() | ids,
            # Beyond what a datetime can hold too: Intercom's `created_at` is not trusted.
            notification_created_at=st.none() | st.integers(-(2**63), 2**63 - 1),
            received_at=st.datetimes(),
            applied_at=times,
            status=st.sampled_from(["pending", "applied", "ignored", "rejected", "failed"]),
            deliveries=st.integers(1, 1000),
            attempts=st.integers(0, 1000),
            error=st.none() | texts,
        ),
        max_size=4,
    )
)
def test_webhook_events_are_written_as_before(events: list[WebhookEvent]) -> None:
    response = rendering.json_response(rendering.webhook_events(events))
    assert response.body == orjson.dumps({"items": [_old_event_json(e) for e in events]})


def test_healthz_is_written_as_before() -> None:
    assert rendering.json_response(rendering.HEALTHY).body == b'{"status":"ok"}'


def test_the_two_timestamp_precisions() -> None:
    at = datetime(2026, 3, 4, 5, 6, 7, 89, tzinfo=UTC)
    assert iso(at) == "2026-03-04T05:06:07Z"
    assert iso_microseconds(at) == "2026-03-04T05:06:07.000089Z"
    assert iso(None) is None
    assert iso_microseconds(None) is None


def test_the_store_and_health_records_render_no_json_of_their_own() -> None:
    # The api layer is the one place the cold routes' JSON is written.
    assert not hasattr(RunView, "as_json")
    assert not hasattr(Readiness, "as_json")
