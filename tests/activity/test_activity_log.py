"""Usage evidence from Intercom's admin activity log (issue 20): the simulator's
endpoints, the reader after each baseline (list form before 2.16, search form from 2.16,
windows, paging, dedup, resumption, refusals), last sign-ins in the snapshot and the change
feed, `GET /api/v1/access-events` and the dormant-seat report."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from app.intercom.activity_types import ACCESS_EVENT_TYPES, EVENT_TYPES_READ
from app.simulator import SimulatorServer
from app.simulator.activity import ACTIVITY_TYPES, SimActivity
from app.store.engine import normalize_database_url
from harness.service import OPERATOR_TOKEN, ServiceServer, snapshot
from harness.waiting import wait_for

DAY = 86400


def record(sim: SimulatorServer, *entries: dict[str, Any]) -> list[dict[str, Any]]:
    response = httpx.post(f"{sim.url}/_sim/activity", json={"entries": list(entries)})
    assert response.status_code == 200, response.text
    recorded: list[dict[str, Any]] = response.json()["recorded"]
    return recorded


def admin_ids(sim: SimulatorServer) -> list[str]:
    with sim.workspace.lock:
        return [a.id for a in sim.workspace.admins.values() if "@intercom.io" not in a.email]


def readyz(service: ServiceServer) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{service.url}/readyz", timeout=5).json()
    return body


def wait_read(service: ServiceServer, *, since: float) -> dict[str, Any]:
    """/readyz once a read that started after `since` (a Unix time) is complete: its cursor
    is at that read's moment (each window moves it on the way)."""

    def done() -> dict[str, Any] | None:
        body = readyz(service)
        read_to = body.get("activity_log_read_to")
        if read_to is not None and _ts(read_to) >= int(since):
            return body
        return None

    return wait_for(done, timeout=30, what="the activity log to be read")


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def wait_problem(service: ServiceServer, problem: str) -> dict[str, Any]:
    def seen() -> dict[str, Any] | None:
        body = readyz(service)
        return body if problem in body["problems"] else None

    return wait_for(seen, timeout=30, what=f"/readyz problem {problem}")


def resync(service: ServiceServer) -> float:
    """Start a new baseline (and so a new read) in a later second than the last read; returns
    a Unix time for `wait_read`."""
    previous = readyz(service).get("activity_log_read_to")
    if previous is not None:
        mark = _ts(previous)
        wait_for(lambda: time.time() >= mark + 1.05, timeout=5, what="the next second")
    started = time.time()
    with httpx.Client(
        base_url=service.url, headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    ) as ops:
        response = ops.post("/resync")
        assert response.status_code == 202, response.text
    return started


def log_requests(sim: SimulatorServer) -> list[Any]:
    return [r for r in sim.workspace.requests() if r.path.startswith("/admins/activity_log")]


def user(body: dict[str, Any], user_id: str) -> dict[str, Any]:
    return next(u for u in body["users"] if u["id"] == user_id)


def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the simulator ---------------------------------------------------------------------------


def test_simulator_serves_the_log_before_the_admin_route_with_intercom_paging(
    sim: SimulatorServer,
) -> None:
    aid = admin_ids(sim)[0]
    now = int(time.time())
    record(
        sim,
        *(
            {"admin_id": aid, "activity_type": "admin_login_success", "created_at": now - 100 + i}
            for i in range(25)
        ),
    )
    with httpx.Client(base_url=sim.url, headers=sim.auth_headers) as api:
        first = api.get("/admins/activity_logs", params={"created_at_after": now - 1000})
        assert first.status_code == 200, first.text  # not taken for /admins/{id}
        body = first.json()
        assert body["type"] == "activity_log.list"
        assert body["pages"]["per_page"] == 20
        assert body["pages"]["total_pages"] == 2
        entry = body["activity_logs"][0]
        assert set(entry) == {
            "id",
            "performed_by",
            "metadata",
            "created_at",
            "activity_type",
            "activity_description",
        }
        assert entry["performed_by"]["id"] == aid
        assert entry["metadata"] == {"sign_in_method": "email_password"}
        token = body["pages"]["next"]["starting_after"]
        second = api.get(
            "/admins/activity_logs",
            params={"created_at_after": now - 1000, "starting_after": token},
        ).json()
        assert len(second["activity_logs"]) == 5
        assert second["pages"]["next"] is None
        ids = {e["id"] for e in body["activity_logs"] + second["activity_logs"]}
        assert len(ids) == 25

        missing = api.get("/admins/activity_logs")
        assert missing.status_code == 400
        assert missing.json()["errors"][0]["code"] == "parameter_invalid"

        # The search form and the type list exist from 2.16 only.
        search = {"created_at_after": str(now - 1000), "per_page": 250}
        assert api.post("/admins/activity_logs/search", json=search).status_code == 404
        v216 = {"Intercom-Version": "2.16"}
        found = api.post("/admins/activity_logs/search", json=search, headers=v216).json()
        assert len(found["activity_logs"]) == 25
        assert found["pages"]["next"] is None
        none = api.post(
            "/admins/activity_logs/search",
            json={**search, "event_types": ["seat_change"]},
            headers=v216,
        ).json()
        assert none["activity_logs"] == []
        too_many = api.post(
            "/admins/activity_logs/search", json={**search, "per_page": 251}, headers=v216
        )
        assert too_many.status_code == 400
        types = api.get("/admins/activity_log_event_types", headers=v216).json()
        assert types["type"] == "activity_log_event_type.list"
        assert len(types["event_types"]) == len(ACTIVITY_TYPES)
        # A teammate's own route still answers as before.
        assert api.get(f"/admins/{aid}").json()["id"] == aid


def test_simulator_rate_limit_is_per_minute_over_ten_second_windows(
    sim: SimulatorServer,
) -> None:
    sim.workspace.rate_limit = 60  # 10 calls per 10 s window
    sim.workspace.enforce_rate_limit = True
    statuses = []
    with httpx.Client(base_url=sim.url, headers=sim.auth_headers) as api:
        # However the calls straddle a window edge, 25 calls in a row meet a 429.
        for _ in range(25):
            response = api.get("/me")
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert response.headers["X-RateLimit-Remaining"] == "0"
                assert int(response.headers["X-RateLimit-Reset"]) >= int(time.time())
                assert response.json()["errors"][0]["code"] == "rate_limit_exceeded"
                break
    assert statuses[-1] == 429
    assert statuses.count(200) >= 10


def test_every_type_the_reader_asks_for_is_one_intercom_knows() -> None:
    assert set(EVENT_TYPES_READ) <= set(ACTIVITY_TYPES)
    assert "admin_login_success" not in ACCESS_EVENT_TYPES
    assert {"admin_logout", "admin_away_mode_change", "admin_password_reset_success"}.isdisjoint(
        ACCESS_EVENT_TYPES
    )


# -- the reader ------------------------------------------------------------------------------


def test_list_form_reads_sign_ins_and_access_events_after_the_baseline(
    sim: SimulatorServer, start_service: Callable[..., ServiceServer], database_url: str
) -> None:
    a, b, c = admin_ids(sim)[:3]
    now = int(time.time())
    record(
        sim,
        {"admin_id": a, "activity_type": "admin_login_success", "created_at": now - 5 * DAY},
        {
            "admin_id": a,
            "activity_type": "admin_login_success",
            "created_at": now - 2 * DAY,
            "metadata": {"sign_in_method": "google_sso"},
        },
        {"admin_id": b, "activity_type": "admin_login_success", "created_at": now - 3 * DAY},
        {
            "id": "perm-1",
            "admin_id": c,
            "activity_type": "admin_permission_change",
            "created_at": now - DAY,
            "metadata": {"before": {"x": 1}, "after": {"x": 2}},
        },
        {"admin_id": c, "activity_type": "app_name_change", "created_at": now - DAY},
        # 30 more sign-ins of c: the list form pages through them, 20 at a time.
        *(
            {"admin_id": c, "activity_type": "admin_login_success", "created_at": now - 7200 + i}
            for i in range(30)
        ),
    )
    begun = time.time()
    service = start_service()
    ready = wait_read(service, since=begun)
    assert "activity_log_failing" not in ready["problems"]
    with service.client() as api:
        body = snapshot(api)
        assert user(body, a)["last_login_at"] == iso(now - 2 * DAY)
        assert user(body, a)["profile"]["last_login_method"] == "google_sso"
        assert user(body, b)["profile"]["last_login_method"] == "email_password"
        assert user(body, c)["last_login_at"] == iso(now - 7200 + 29)
        never = [u for u in body["users"] if u["id"] not in (a, b, c)]
        assert all(u["last_login_at"] is None for u in never)
        events = api.get("/api/v1/access-events").json()
        assert [e["id"] for e in events["items"]] == ["perm-1"]
        event = events["items"][0]
        assert event["type"] == "admin_permission_change"
        assert event["user_id"] == c
        assert event["actor"]["id"] == c
        assert event["actor"]["ip"]
        assert event["metadata"] == {"before": {"x": 1}, "after": {"x": 2}}
        assert event["at"] == iso(now - DAY)
    requests = log_requests(sim)
    assert {r.path for r in requests} == {"/admins/activity_logs"}
    assert len(requests) == 3 + 1  # 90 days = 3 windows; the last one has 2 pages
    # baton-sql reads the same through the c1_user view.
    engine = create_engine(normalize_database_url(database_url))
    try:
        with engine.connect() as connection:
            rows: dict[str, Any] = dict(
                connection.execute(
                    text("SELECT id, last_login_method FROM c1_user WHERE id IN (:a, :z)"),
                    {"a": a, "z": never[0]["id"]},
                ).all()
            )
    finally:
        engine.dispose()
    assert rows == {a: "google_sso", never[0]["id"]: ""}


def test_search_form_asks_only_for_the_types_kept_250_a_page(
    sim: SimulatorServer, start_service: Callable[..., ServiceServer]
) -> None:
    sim.workspace.api_version = "2.16"
    a = admin_ids(sim)[0]
    now = int(time.time())
    record(
        sim,
        *(
            {"admin_id": a, "activity_type": "admin_login_success", "created_at": now - 600 + i}
            for i in range(260)
        ),
        {"id": "seat-1", "admin_id": a, "activity_type": "seat_change", "created_at": now - 60},
    )
    begun = time.time()
    service = start_service(intercom_api_version="2.16", activity_log_backfill_days=10)
    wait_read(service, since=begun)
    requests = log_requests(sim)
    assert {r.path for r in requests} == {"/admins/activity_logs/search"}
    assert len(requests) == 2  # one window, 261 entries: 2 pages of 250
    with service.client() as api:
        assert user(snapshot(api), a)["last_login_at"] == iso(now - 600 + 259)
        assert [e["id"] for e in api.get("/api/v1/access-events").json()["items"]] == ["seat-1"]


def _window_bounds(sim: SimulatorServer) -> list[tuple[int, int]]:
    bounds = []
    for r in log_requests(sim):
        query = parse_qs(r.query)
        bounds.append((int(query["created_at_after"][0]), int(query["created_at_before"][0])))
    return sorted(set(bounds))


def test_windows_are_at_most_30_days_and_cover_the_backfill_without_gaps(
    sim: SimulatorServer, start_service: Callable[..., ServiceServer]
) -> None:
    before = int(time.time())
    begun = time.time()
    service = start_service(activity_log_backfill_days=75)
    ready = wait_read(service, since=begun)
    bounds = _window_bounds(sim)
    assert len(bounds) == 3
    assert bounds[0][0] >= before - 75 * DAY - 1
    assert bounds[0][0] <= before - 75 * DAY + 60
    for (_lo, hi), (next_lo, _next_hi) in zip(bounds, bounds[1:], strict=False):
        assert next_lo <= hi  # contiguous (the boundary second is read twice, deduplicated)
    assert all(hi - lo <= 30 * DAY for lo, hi in bounds)
    read_to = datetime.fromisoformat(ready["activity_log_read_to"].replace("Z", "+00:00"))
    assert bounds[-1][1] == int(read_to.timestamp())


def test_overlapping_reads_store_each_entry_once_and_change_nothing_twice(
    sim: SimulatorServer, start_service: Callable[..., ServiceServer]
) -> None:
    a = admin_ids(sim)[0]
    now = int(time.time())
    record(
        sim,
        {"admin_id": a, "activity_type": "admin_login_success", "created_at": now - 120},
        {
            "id": "inv-1",
            "admin_id": a,
            "activity_type": "admin_invite_creation",
            "created_at": now - 60,
        },
    )
    begun = time.time()
    service = start_service()
    wait_read(service, since=begun)
    with service.client() as api:
        version = snapshot(api)["version"]
    sim.workspace.clear_requests()
    wait_read(service, since=resync(service))
    # The second read starts a little before the first one's end, so it meets both again.
    ((lo, _hi),) = _window_bounds(sim)
    assert lo <= now - 120
    with service.client() as api:
        events = api.get("/api/v1/access-events").json()["items"]
        assert [e["id"] for e in events] == ["inv-1"]
        # Nothing new: the version (and the ETag C1 polls) stays.
        assert snapshot(api)["version"] == version


def test_a_failure_mid_backfill_keeps_the_cursor_then_the_next_read_resumes(
    sim: SimulatorServer, start_service: Callable[..., ServiceServer]
) -> None:
    a = admin_ids(sim)[0]
    now = int(time.time())
    record(
        sim,
        {"admin_id": a, "activity_type": "admin_login_success", "created_at": now - 70 * DAY},
        {"admin_id": a, "activity_type": "admin_login_success", "created_at": now - DAY},
    )
    # The first window's call goes through; every later one fails past the client's retries.
    sim.add_fault("/admins/activity_logs")  # no status, no delay: answered normally
    sim.add_fault("/admins/activity_logs", status=500, times=50)
    service = start_service(activity_log_backfill_days=75)
    ready = wait_problem(service, "activity_log_failing")
    assert ready["status"] == "degraded"  # the baseline succeeded and is served
    read_to = ready["activity_log_read_to"]
    assert read_to is not None  # the first window is in
    read_to_ts = datetime.fromisoformat(read_to.replace("Z", "+00:00")).timestamp()
    assert now - 46 * DAY <= read_to_ts <= now - 44 * DAY
    with service.client() as api:
        assert user(snapshot(api), a)["last_login_at"] == iso(now - 70 * DAY)
    with service.client(OPERATOR_TOKEN) as ops:
        runs = ops.get("/sync-runs").json()
        items = runs["items"] if isinstance(runs, dict) else runs
        assert items[0]["status"] == "succeeded"
    sim.clear_faults()
    sim.workspace.clear_requests()
    ready = wait_read(service, since=resync(service))
    assert "activity_log_failing" not in ready["problems"]
    bounds = _window_bounds(sim)
    assert bounds[0][0] <= read_to_ts
    assert bounds[0][0] >= read_to_ts - 3600
    with service.client() as api:
        assert user(snapshot(api), a)["last_login_at"] == iso(now - DAY)


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_token_is_activity_log_forbidden_and_the_baseline_stands(
    status: int, sim: SimulatorServer, start_service: Callable[..., ServiceServer]
) -> None:
    sim.add_fault("/admins/activity_logs", status=status, times=5)
    service = start_service()
    ready = wait_problem(service, "activity_log_forbidden")
    assert ready["activity_log_read_to"] is None
    assert "activity_log_failing" not in ready["problems"]
    with service.client() as api:
        assert len(snapshot(api)["users"]) == len(sim.workspace.admins)
        report = api.get("/api/v1/reports/dormant")
        assert report.status_code == 503
        assert report.json()["error"]["code"] == "activity_log_not_read"
    assert len(log_requests(sim)) == 1  # an auth failure is not retried


def test_far_future_entries_in_a_page_are_refused_whatever_the_window(
    sim: SimulatorServer, start_service: Callable[..., ServiceServer]
) -> None:
    """A sign-in more than 5 minutes past the moment of reading is refused, even when
    Intercom answers it (here: entries outside the window asked for, a clock far ahead)."""
    a, b = admin_ids(sim)[:2]
    now = int(time.time())
    record(
        sim,
        {"admin_id": b, "activity_type": "admin_login_success", "created_at": now - 3600},
        {"admin_id": b, "activity_type": "admin_login_success", "created_at": now + 3600},
    )
    sim.workspace.activity.record(
        SimActivity(
            id="future-1",
            created_at=now + 10 * DAY,
            activity_type="admin_login_success",
            admin_id=a,
        )
    )
    original = sim.workspace.activity.window

    def window_ignoring_before(lo: int, hi: int, **kwargs: Any) -> Any:
        return original(lo, hi + 365 * DAY, **kwargs)

    sim.workspace.activity.window = window_ignoring_before  # type: ignore[method-assign]
    begun = time.time()
    service = start_service()
    wait_read(service, since=begun)
    with service.client() as api:
        body = snapshot(api)
        assert user(body, a)["last_login_at"] is None
        assert user(body, b)["last_login_at"] == iso(now - 3600)


def test_newest_sign_in_wins_between_the_log_and_the_webhook(
    sim: SimulatorServer, start_service: Callable[..., ServiceServer]
) -> None:
    a, b = admin_ids(sim)[:2]
    now = int(time.time())
    record(
        sim,
        {"admin_id": a, "activity_type": "admin_login_success", "created_at": now - 3 * DAY},
        {"admin_id": b, "activity_type": "admin_login_success", "created_at": now - 600},
    )
    begun = time.time()
    service = start_service()
    wait_read(service, since=begun)

    def send(admin_id: str, created_at: int) -> None:
        response = httpx.post(
            f"{sim.url}/_sim/webhooks/send",
            json={
                "url": f"{service.url}/webhooks/intercom",
                "topic": "admin.logged_in",
                "admin_id": admin_id,
                "created_at": created_at,
            },
        )
        assert response.json()["status"] == 200, response.text

    send(a, now - DAY)  # newer than the log's: wins
    send(b, now - 2 * DAY)  # older than the log's: loses
    with service.client() as api:
        wait_for(
            lambda: user(snapshot(api), a)["last_login_at"] == iso(now - DAY),
            what="the webhook sign-in",
        )
        body = snapshot(api)
        assert user(body, b)["last_login_at"] == iso(now - 600)
        assert user(body, b)["profile"]["last_login_method"] == "email_password"
        version = body["version"]
        # A later read meets the log's older sign-in of `a` again: the webhook's stays.
        wait_read(service, since=resync(service))
        body = snapshot(api)
        assert user(body, a)["last_login_at"] == iso(now - DAY)
        assert body["version"] == version


def test_a_new_sign_in_is_one_change_in_the_feed(
    sim: SimulatorServer, start_service: Callable[..., ServiceServer]
) -> None:
    a = admin_ids(sim)[0]
    begun = time.time()
    service = start_service()
    wait_read(service, since=begun)
    with service.client() as api:
        version = snapshot(api)["version"]
        record(
            sim,
            {
                "admin_id": a,
                "activity_type": "admin_login_success",
                "created_at": int(time.time()) - 5,
            },
        )
        wait_read(service, since=resync(service))
        feed = api.get("/api/v1/changes", params={"since": version}).json()
        assert [(c["resource_type"], c["resource_id"], c["op"]) for c in feed["changes"]] == [
            ("user", a, "upsert")
        ]
        assert api.get(f"/api/v1/users/{a}").json()["profile"]["last_login_method"] == (
            "email_password"
        )


# -- the API ---------------------------------------------------------------------------------


def test_access_events_pages_and_filters(
    sim: SimulatorServer, start_service: Callable[..., ServiceServer]
) -> None:
    a, b = admin_ids(sim)[:2]
    now = int(time.time())
    kinds = [
        "seat_change",
        "role_change",
        "admin_login_failure",
        "app_team_membership_modification",
    ]
    entries = [
        {
            "id": f"ev-{i:02d}",
            "admin_id": a if i % 2 else b,
            "activity_type": kinds[i % len(kinds)],
            "created_at": now - 1000 + (i // 2) * 10,  # pairs share a second
        }
        for i in range(9)
    ]
    record(sim, *entries)
    begun = time.time()
    service = start_service()
    wait_read(service, since=begun)
    with service.client() as api:
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = api.get("/api/v1/access-events", params=params).json()
            seen += [e["id"] for e in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == [f"ev-{i:02d}" for i in range(9)]  # oldest first, ties by id

        def ids(**params: Any) -> list[str]:
            response = api.get("/api/v1/access-events", params=params)
            assert response.status_code == 200, response.text
            return [e["id"] for e in response.json()["items"]]

        assert ids(type="seat_change") == ["ev-00", "ev-04", "ev-08"]
        assert ids(type=["seat_change", "role_change"]) == [
            "ev-00",
            "ev-01",
            "ev-04",
            "ev-05",
            "ev-08",
        ]
        assert ids(user_id=a) == ["ev-01", "ev-03", "ev-05", "ev-07"]
        assert ids(since=iso(now - 1000 + 30)) == ["ev-06", "ev-07", "ev-08"]
        assert ids(since=str(now - 1000 + 30), user_id=a) == ["ev-07"]

        bad_type = api.get("/api/v1/access-events", params={"type": "app_name_change"})
        assert bad_type.status_code == 400
        assert bad_type.json()["error"]["code"] == "invalid_request"
        bad_since = api.get("/api/v1/access-events", params={"since": "yesterday"})
        assert bad_since.status_code == 400
        first = api.get("/api/v1/access-events", params={"limit": 2}).json()
        other_filter = api.get(
            "/api/v1/access-events", params={"cursor": first["next_cursor"], "user_id": a}
        )
        assert other_filter.status_code == 400
        assert other_filter.json()["error"]["code"] == "invalid_cursor"
        assert api.get("/api/v1/access-events", params={"cursor": "garbage"}).status_code == 400
    with service.client(token=None) as anonymous:
        assert anonymous.get("/api/v1/access-events").status_code == 401
        assert anonymous.get("/api/v1/reports/dormant").status_code == 401


def test_dormant_report_as_json_and_csv(
    sim: SimulatorServer, start_service: Callable[..., ServiceServer]
) -> None:
    ids = admin_ids(sim)
    recent, old, older = ids[:3]
    now = int(time.time())
    record(
        sim,
        {"admin_id": recent, "activity_type": "admin_login_success", "created_at": now - DAY},
        {"admin_id": old, "activity_type": "admin_login_success", "created_at": now - 40 * DAY},
        {"admin_id": older, "activity_type": "admin_login_success", "created_at": now - 60 * DAY},
    )
    begun = time.time()
    service = start_service()
    wait_read(service, since=begun)
    with service.client() as api:
        report = api.get("/api/v1/reports/dormant", params={"days": 30})
        assert report.status_code == 200, report.text
        body = report.json()
        items = body["items"]
        listed = [i["id"] for i in items]
        assert recent not in listed
        # Never seen signing in first (by id), then the oldest sign-in first.
        never = [i["id"] for i in items if i["last_login_at"] is None]
        assert listed == [*sorted(never), older, old]
        assert len(listed) == len(sim.workspace.admins) - 1
        truth = sim.workspace.get_admin(old)
        assert truth is not None
        row = next(i for i in items if i["id"] == old)
        assert row["email"] == truth.email
        assert row["has_inbox_seat"] == truth.has_inbox_seat
        assert sorted(t["id"] for t in row["teams"]) == sorted(truth.team_ids)
        assert row["last_login_at"] == iso(now - 40 * DAY)
        assert body["days"] == 30
        assert body["activity_log_read_to"] is not None

        wider = api.get("/api/v1/reports/dormant", params={"days": 50}).json()["items"]
        assert old not in [i["id"] for i in wider]
        assert older in [i["id"] for i in wider]

        as_csv = api.get(
            "/api/v1/reports/dormant", params={"days": 30}, headers={"Accept": "text/csv"}
        )
        assert as_csv.status_code == 200
        assert as_csv.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(as_csv.text)))
        assert [r["id"] for r in rows] == listed
        csv_row = next(r for r in rows if r["id"] == old)
        assert csv_row["email"] == truth.email
        assert csv_row["last_login_at"] == iso(now - 40 * DAY)

        assert api.get("/api/v1/reports/dormant", params={"days": 0}).status_code == 400


def test_activity_log_disabled_reads_nothing(
    sim: SimulatorServer, start_service: Callable[..., ServiceServer]
) -> None:
    service = start_service(activity_log_enabled="false")
    with service.client() as api:
        assert snapshot(api)["users"]
    assert log_requests(sim) == []
    assert readyz(service)["activity_log_read_to"] is None


def test_recorded_entries_round_trip_through_the_control_plane(sim: SimulatorServer) -> None:
    aid = admin_ids(sim)[0]
    recorded = record(sim, {"admin_id": aid, "activity_type": "seat_revoke", "id": "x-1"})
    assert recorded[0]["id"] == "x-1"
    assert record(sim, {"admin_id": aid, "activity_type": "seat_revoke", "id": "x-1"}) == []
    listed = httpx.get(f"{sim.url}/_sim/activity").json()["entries"]
    assert [e["id"] for e in listed] == ["x-1"]
    bad = httpx.post(f"{sim.url}/_sim/activity", content=orjson.dumps({"admin_id": aid}))
    assert bad.status_code == 400
    assert httpx.delete(f"{sim.url}/_sim/activity").json() == {"cleared": True}
    assert httpx.get(f"{sim.url}/_sim/activity").json()["entries"] == []


# -- admin.activity_log_event.created webhooks ------------------------------------------------


def test_activity_log_webhooks_are_classified_like_the_log(
    sim: SimulatorServer, start_service: Callable[..., ServiceServer]
) -> None:
    a, b = admin_ids(sim)[:2]
    now = int(time.time())
    # The log already holds the seat change the webhook will announce again.
    (seat,) = record(
        sim,
        {"id": "seat-9", "admin_id": b, "activity_type": "seat_change", "created_at": now - 50},
    )
    begun = time.time()
    service = start_service()
    wait_read(service, since=begun)

    def send(item: dict[str, Any]) -> None:
        response = httpx.post(
            f"{sim.url}/_sim/webhooks/send",
            json={
                "url": f"{service.url}/webhooks/intercom",
                "topic": "admin.activity_log_event.created",
                "item": {"type": "admin_activity_log_event", **item},
            },
        )
        assert response.json()["status"] == 200, response.text

    def entry(entry_id: str, admin_id: str, activity_type: str, created_at: int) -> dict[str, Any]:
        return {
            "id": entry_id,
            "performed_by": {"type": "admin", "id": admin_id, "email": None, "ip": "192.0.2.1"},
            "metadata": {"sign_in_method": "saml"} if activity_type.endswith("success") else {},
            "created_at": created_at,
            "activity_type": activity_type,
            "activity_description": f"{activity_type} by {admin_id}",
        }

    send({**seat, "type": "admin_activity_log_event"})  # the same entry: stored once
    send(entry("fail-1", a, "admin_login_failure", now - 40))
    send(entry("in-1", a, "admin_login_success", now - 30))
    send(entry("out-1", a, "admin_logout", now - 20))  # neither: not kept
    send(entry("future-1", b, "admin_login_success", now + 3 * DAY))  # refused
    with service.client() as api:

        def events() -> list[str] | None:
            items = api.get("/api/v1/access-events").json()["items"]
            found = [e["id"] for e in items]
            return found if "fail-1" in found else None

        assert wait_for(events, what="the webhook access event") == ["seat-9", "fail-1"]
        wait_for(
            lambda: user(snapshot(api), a)["last_login_at"] == iso(now - 30),
            what="the webhook sign-in",
        )
        body = snapshot(api)
        assert user(body, a)["profile"]["last_login_method"] == "saml"
        assert user(body, b)["last_login_at"] is None


# -- configuration and documentation -----------------------------------------------------------


@pytest.mark.parametrize("days", ["0", "731", "ninety"])
def test_backfill_days_outside_1_to_730_stop_start_up(days: str) -> None:
    from app.settings import ConfigError, load_settings

    with pytest.raises(ConfigError, match="ACTIVITY_LOG_BACKFILL_DAYS"):
        load_settings(_env_file=None, activity_log_backfill_days=days)


def test_readme_and_env_example_name_the_permission_each_feature_needs() -> None:
    from harness.service import ROOT

    for name in ("README.md", ".env.example"):
        text = (ROOT / name).read_text()
        assert "Read admins" in text, name
        assert "Read admin activity logs" in text, name


def test_the_activity_benchmark_runs_at_a_tiny_size(tmp_path: Any) -> None:
    """bench/activity.py at a tiny size, so it cannot rot; its figures are in
    docs/performance.md."""
    from bench.activity import main

    result = main(
        [
            "--teammates",
            "20",
            "--days",
            "40",
            "--access-per-day",
            "2",
            "--output",
            str(tmp_path / "activity.json"),
        ]
    )
    backfill, day = result["backfill"], result["incremental_day"]
    assert backfill["status"] == "ok"
    assert backfill["entries"] == result["log_entries"]
    assert backfill["windows"] == 2
    assert backfill["rate_limited_calls"] == 0
    assert day["status"] == "ok"
    assert day["entries"] == day["day_entries"] == 22
    assert day["calls"] == 1
    schedule = result["every_minutes"]
    assert schedule["reads"] == 96
    assert schedule["failed"] == 0
    assert schedule["max_calls_per_read"] == 1


@settings(max_examples=200, deadline=None)
@given(
    start=st.integers(min_value=0, max_value=2_000_000_000),
    seconds=st.integers(min_value=1, max_value=800 * DAY),
)
def test_windows_cover_the_span_contiguously_each_at_most_30_days(start: int, seconds: int) -> None:
    from app.activity.reader import WINDOW, windows

    lo = datetime.fromtimestamp(start, UTC)
    hi = datetime.fromtimestamp(start + seconds, UTC)
    parts = windows(lo, hi)
    assert parts[0][0] == lo
    assert parts[-1][1] == hi
    for (_a, b), (c, _d) in zip(parts, parts[1:], strict=False):
        assert b == c
    assert all(a < b <= a + WINDOW for a, b in parts)
    assert len(parts) == -(-seconds // int(WINDOW.total_seconds()))


def test_access_events_older_than_the_retention_are_not_kept(
    sim: SimulatorServer, start_service: Callable[..., ServiceServer]
) -> None:
    a = admin_ids(sim)[0]
    now = int(time.time())
    record(
        sim,
        {
            "id": "old-1",
            "admin_id": a,
            "activity_type": "seat_revoke",
            "created_at": now - 20 * DAY,
        },
        {"id": "new-1", "admin_id": a, "activity_type": "seat_revoke", "created_at": now - 5 * DAY},
    )
    begun = time.time()
    service = start_service(access_event_retention_days=10)
    wait_read(service, since=begun)
    with service.client() as api:
        items = api.get("/api/v1/access-events").json()["items"]
        assert [e["id"] for e in items] == ["new-1"]
