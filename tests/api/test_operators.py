"""Operator surface: single-flight `/resync`, run objects and history, `/readyz`,
and the reconcile schedule."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from app.simulator import SimulatorServer
from app.sync.schedule import RECONCILE_JITTER, reconcile_period, seconds_until_reconcile
from harness.service import OPERATOR_TOKEN, READ_TOKEN, SIM_SECRET, SIM_TOKEN, ServiceServer
from harness.waiting import wait_for

StartService = Callable[..., ServiceServer]

# `warnings`: items a run could not store and left as they were.
RUN_FIELDS = {"id", "trigger", "status", "started_at", "finished_at", "stats", "error", "warnings"}
STATS_FIELDS = {
    "users_added",
    "users_updated",
    "users_removed",
    "teams_added",
    "teams_updated",
    "teams_removed",
    "memberships_added",
    "memberships_removed",
}
READYZ_FIELDS = {
    "activity_log_read_to",
    "status",
    "version",
    "last_sync_at",
    "last_webhook_at",
    "inbox_backlog",
    "problems",
}


def runs(service: ServiceServer, **params: Any) -> list[dict[str, Any]]:
    with service.client(OPERATOR_TOKEN) as ops:
        response = ops.get("/sync-runs", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"items"}
    items: list[dict[str, Any]] = body["items"]
    return items


def wait_finished(service: ServiceServer, run_id: int) -> dict[str, Any]:
    with service.client(OPERATOR_TOKEN) as ops:

        def finished() -> dict[str, Any] | None:
            run: dict[str, Any] = ops.get(f"/sync-runs/{run_id}").json()
            return run if run["finished_at"] is not None else None

        return wait_for(finished, timeout=30, what=f"sync run {run_id} to finish")


def assert_run_shape(run: dict[str, Any]) -> None:
    assert set(run) == RUN_FIELDS
    assert isinstance(run["id"], int)
    assert isinstance(run["warnings"], list)
    assert run["trigger"] in {"startup", "schedule", "operator", "webhook", "cli"}
    assert run["status"] in {"queued", "running", "succeeded", "failed", "blocked"}
    assert set(run["stats"]) == STATS_FIELDS
    assert all(isinstance(v, int) for v in run["stats"].values())
    if run["error"] is not None:
        assert set(run["error"]) == {"code", "message"}
        assert run["error"]["code"]
        assert run["error"]["message"]


class TestResync:
    def test_concurrent_resyncs_share_one_run_and_one_fetch(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        # A slow /admins keeps the first run in flight while the other nine arrive.
        sim.add_fault(path="/admins", delay_seconds=2.0)
        sim.clear_requests()
        barrier = threading.Barrier(10)
        responses: list[httpx.Response] = []
        lock = threading.Lock()

        def post() -> None:
            with service.client(OPERATOR_TOKEN) as ops:
                barrier.wait()
                response = ops.post("/resync")
            with lock:
                responses.append(response)

        threads = [threading.Thread(target=post) for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)

        assert [r.status_code for r in responses] == [202] * 10
        run_ids = {r.json()["id"] for r in responses}
        assert len(run_ids) == 1
        (run_id,) = run_ids
        assert {r.headers["Location"] for r in responses} == {f"/sync-runs/{run_id}"}
        for response in responses:
            assert_run_shape(response.json())
            assert response.json()["trigger"] == "operator"

        run = wait_finished(service, run_id)
        assert run["status"] == "succeeded"
        assert len(sim.requests("/admins")) == 1
        assert len(sim.requests("/teams")) == 1


class TestSyncRuns:
    def test_run_objects_have_exactly_the_spec_fields(self, service: ServiceServer) -> None:
        (startup,) = runs(service)
        assert_run_shape(startup)
        assert startup["trigger"] == "startup"
        assert startup["status"] == "succeeded"
        assert startup["error"] is None
        assert startup["stats"]["users_added"] == 30
        assert startup["stats"]["teams_added"] == 6
        assert startup["started_at"] <= startup["finished_at"]
        with service.client(OPERATOR_TOKEN) as ops:
            one = ops.get(f"/sync-runs/{startup['id']}")
        assert one.status_code == 200
        assert one.json() == startup

    def test_a_failed_run_carries_its_error(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        sim.add_fault(path="/me", status=503, times=100)
        with service.client(OPERATOR_TOKEN) as ops:
            run_id = ops.post("/resync").json()["id"]
        run = wait_finished(service, run_id)
        assert_run_shape(run)
        assert run["status"] == "failed"
        assert run["error"]["code"] == "intercom_unavailable"
        assert SIM_TOKEN not in str(run)

    def test_the_history_is_newest_first_and_limited(self, service: ServiceServer) -> None:
        with service.client(OPERATOR_TOKEN) as ops:
            for _ in range(3):
                wait_finished(service, ops.post("/resync").json()["id"])
        history = runs(service)
        assert len(history) == 4
        ids = [run["id"] for run in history]
        assert ids == sorted(ids, reverse=True)
        assert [run["trigger"] for run in history] == ["operator"] * 3 + ["startup"]
        for run in history:
            assert_run_shape(run)
        assert runs(service, limit=2) == history[:2]

    def test_unknown_run_id_is_404_with_the_error_shape(self, service: ServiceServer) -> None:
        with service.client(OPERATOR_TOKEN) as ops:
            response = ops.get("/sync-runs/987654")
            bad_limit = ops.get("/sync-runs", params={"limit": 0})
        assert response.status_code == 404
        body = response.json()
        assert set(body) == {"error"}
        assert set(body["error"]) == {"code", "message"}
        assert body["error"]["code"] == "not_found"
        assert body["error"]["message"]
        assert bad_limit.status_code == 400
        assert set(bad_limit.json()["error"]) == {"code", "message"}


class TestReadyz:
    def test_not_ready_before_the_first_baseline_then_ready(
        self, start_service: StartService
    ) -> None:
        service = start_service(wait_ready=False, sync_on_startup=False)
        before = httpx.get(f"{service.url}/readyz", timeout=10)
        assert before.status_code == 503
        body = before.json()
        assert set(body) == READYZ_FIELDS
        assert "never_synced" in body["problems"]
        assert body["last_sync_at"] is None
        assert_no_secrets(before.text, service)

        with service.client(OPERATOR_TOKEN) as ops:
            run = ops.post("/resync").json()
        assert wait_finished(service, run["id"])["status"] == "succeeded"
        after = httpx.get(f"{service.url}/readyz", timeout=10)
        assert after.status_code == 200
        body = after.json()
        assert set(body) == READYZ_FIELDS
        assert body["status"] == "ok"
        assert body["problems"] == []
        assert body["version"] == 1
        assert body["last_sync_at"] is not None
        assert body["last_webhook_at"] is None
        assert body["inbox_backlog"] == 0
        assert_no_secrets(after.text, service)


def assert_no_secrets(text: str, service: ServiceServer) -> None:
    for secret in (SIM_TOKEN, SIM_SECRET, READ_TOKEN, OPERATOR_TOKEN):
        assert secret not in text
    assert service.settings.database_url not in text


class TestSchedule:
    def test_a_reconcile_period_is_the_interval_plus_or_minus_the_jitter(self) -> None:
        rng = random.Random(7)
        periods = [reconcile_period(900, rng) for _ in range(2000)]
        assert min(periods) >= 900 * (1 - RECONCILE_JITTER)
        assert max(periods) <= 900 * (1 + RECONCILE_JITTER)
        # Both sides of the interval, and not clustered: replicas spread out.
        assert min(periods) < 820
        assert max(periods) > 980
        assert 880 < sum(periods) / len(periods) < 920

    def test_the_next_reconcile_is_one_period_after_the_last_successful_sync(self) -> None:
        last_sync = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
        queued = last_sync - timedelta(seconds=20)  # the run that produced it
        at = last_sync + timedelta(seconds=100)

        def wait(now: datetime, period: float, last_queued: datetime | None = queued) -> float:
            return seconds_until_reconcile(last_sync, last_queued, now, period, 900)

        # Due one period after the sync, whatever the period drawn (never 1.5 intervals).
        assert wait(at, 900) == 800
        assert wait(at, 810) == 710
        assert wait(at, 990) == 890
        assert wait(last_sync + timedelta(seconds=990), 990) == 0
        assert wait(last_sync + timedelta(seconds=2000), 900) == 0
        # A run queued since (another replica's reconcile, or one that failed) holds the next
        # one off for half an interval.
        recent = last_sync + timedelta(seconds=1000)
        assert wait(last_sync + timedelta(seconds=1100), 900, recent) == 350
        assert wait(last_sync + timedelta(seconds=1100), 900, None) == 0

    def test_a_reconcile_runs_after_the_first_success(self, start_service: StartService) -> None:
        service = start_service(reconcile_interval_seconds=1, reconcile_allow_short_interval=True)

        def scheduled() -> dict[str, Any] | None:
            return next((r for r in runs(service) if r["trigger"] == "schedule"), None)

        run = wait_for(scheduled, timeout=30, what="a scheduled reconcile")
        startup = runs(service, limit=100)[-1]
        assert startup["trigger"] == "startup"
        assert startup["status"] == "succeeded"
        finished = wait_finished(service, run["id"])
        assert finished["status"] == "succeeded"
        assert finished["started_at"] >= startup["finished_at"]

    def test_interval_zero_never_schedules(self, start_service: StartService) -> None:
        service = start_service(reconcile_interval_seconds=0)
        coordinator = service.app.state.services.coordinator
        # The scheduler task returns once the start-up run is queued: nothing is left to fire.
        wait_for(
            lambda: coordinator._scheduler is not None and coordinator._scheduler.done(),
            timeout=10,
            what="the scheduler to finish",
        )
        time.sleep(1.0)
        assert [r["trigger"] for r in runs(service)] == ["startup"]
