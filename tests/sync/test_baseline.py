"""Baselines through the running service: atomic on failure, diff-not-rewrite, removal
and re-add, memberships from both sides, and the mass-removal brake. The brake's thresholds are
also pinned at the function level, against a migrated store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from app.intercom.models import IntercomAdmin, IntercomTeam, IntercomWorkspace
from app.simulator import SimAdmin, SimulatorServer
from app.store.engine import Database
from app.store.models import utcnow
from app.store.versioning import current_version
from app.sync.baseline import (
    BaselineResult,
    FetchedWorkspace,
    MassRemovalBlocked,
    apply_baseline,
)
from harness.service import (
    OPERATOR_TOKEN,
    SIM_TOKEN,
    ServiceServer,
    served_truth,
    simulator_truth,
    snapshot,
)
from harness.waiting import wait_for

StartService = Callable[..., ServiceServer]


def resync(service: ServiceServer, *, force: bool = False) -> dict[str, Any]:
    """POST /resync and wait for that run to finish; returns the finished run object."""
    with service.client(OPERATOR_TOKEN) as ops:
        response = ops.post("/resync", params={"force": "true"} if force else None)
        assert response.status_code == 202, response.text
        run_id = response.json()["id"]

        def finished() -> dict[str, Any] | None:
            run: dict[str, Any] = ops.get(f"/sync-runs/{run_id}").json()
            return run if run["finished_at"] is not None else None

        return wait_for(finished, timeout=30, what=f"sync run {run_id} to finish")


def raw_snapshot(client: httpx.Client, **params: Any) -> tuple[bytes, str]:
    response = client.get(
        "/api/v1/snapshot", params=params, headers={"Accept-Encoding": "identity"}
    )
    assert response.status_code == 200, response.text
    return response.content, response.headers["ETag"]


def readyz(service: ServiceServer) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{service.url}/readyz", timeout=10).json()
    return body


def human_with_teams(sim: SimulatorServer) -> SimAdmin:
    with sim.workspace.lock:
        return next(a.copy() for a in sim.workspace.admins.values() if len(a.team_ids) >= 2)


def grants_of(body: dict[str, Any], user_id: str) -> list[str]:
    return [g["id"] for g in body["grants"] if g["principal"]["resource_id"] == user_id]


class TestFailuresLeaveTheStoreAlone:
    def test_a_teams_failure_after_admins_leaves_the_snapshot_byte_identical(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        with service.client() as client:
            before = raw_snapshot(client)
            # Changes the run would apply if it got that far.
            admin = human_with_teams(sim)
            sim.workspace.upsert_admin(
                SimAdmin.from_dict({"id": admin.id, "job_title": "Changed"}, base=admin)
            )
            sim.workspace.remove_member(admin.team_ids[0], admin.id)
            sim.clear_requests()
            sim.add_fault(path="/teams", status=500, times=100)

            run = resync(service)

            assert run["status"] == "failed"
            assert run["error"]["code"] == "intercom_unavailable"
            assert len(sim.requests("/admins")) == 1  # the failure was after /admins
            assert len(sim.requests("/teams")) == service.settings.intercom_max_attempts
            assert raw_snapshot(client) == before

            sim.clear_faults()
            assert resync(service)["status"] == "succeeded"
            assert raw_snapshot(client)[1] != before[1]

    def test_a_401_fails_the_run_at_once_and_keeps_serving_the_last_snapshot(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        with service.client() as client:
            before = raw_snapshot(client)
            sim.clear_requests()
            sim.add_fault(path="*", status=401, times=1000)

            run = resync(service)

            assert run["status"] == "failed"
            assert run["error"]["code"] == "intercom_auth_failed"
            assert len(sim.requests()) == 1  # no retry loop against a refused token
            # Still ready (a baseline has succeeded), but the problem is named.
            ready = httpx.get(f"{service.url}/readyz", timeout=10)
            assert ready.status_code == 200
            assert "auth_failed" in ready.json()["problems"]
            assert raw_snapshot(client) == before


class TestDiff:
    def test_a_baseline_reads_me_admins_teams_with_the_version_and_token(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        # The activity log read after the baseline comes after these three.
        requests = sim.requests()
        assert [r.path for r in requests][:3] == ["/me", "/admins", "/teams"]
        assert {r.path for r in requests[3:]} <= {"/admins/activity_logs"}
        for request in requests:
            assert request.headers["intercom-version"] == service.settings.intercom_api_version
            assert request.headers["authorization"] == f"Bearer {SIM_TOKEN}"

    def test_a_resync_that_finds_nothing_new_keeps_the_version_and_etag(
        self, service: ServiceServer
    ) -> None:
        with service.client() as client:
            before = raw_snapshot(client)
            run = resync(service)
            assert run["status"] == "succeeded"
            assert set(run["stats"].values()) == {0}
            assert raw_snapshot(client) == before
            feed = client.get("/api/v1/changes", params={"since": 1}).json()
            assert feed["changes"] == []
            assert feed["version"] == 1

    def test_one_changed_field_bumps_the_version_once_with_one_upsert(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        admin = human_with_teams(sim)
        with service.client() as client:
            old = snapshot(client)["version"]
            sim.workspace.upsert_admin(
                SimAdmin.from_dict({"id": admin.id, "job_title": "Chief Listener"}, base=admin)
            )
            run = resync(service)

            assert run["status"] == "succeeded"
            assert run["stats"]["users_updated"] == 1
            assert sum(run["stats"].values()) == 1
            body = snapshot(client)
            assert body["version"] == old + 1
            user = next(u for u in body["users"] if u["id"] == admin.id)
            assert user["profile"]["job_title"] == "Chief Listener"

            feed = client.get("/api/v1/changes", params={"since": old}).json()
            assert [
                (c["version"], c["resource_type"], c["resource_id"], c["op"])
                for c in feed["changes"]
            ] == [(old + 1, "user", admin.id, "upsert")]
            assert feed["next_since"] == old + 1
            assert feed["version"] == old + 1

    def test_a_removed_teammate_disappears_with_their_grants_and_can_come_back(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        admin = human_with_teams(sim)
        with service.client() as client:
            old = snapshot(client)["version"]
            # A grant per team, and the workspace's `member` grant.
            assert len(grants_of(snapshot(client), admin.id)) == len(admin.team_ids) + 1
            sim.workspace.remove_admin(admin.id)

            run = resync(service)
            assert run["status"] == "succeeded"
            assert run["stats"]["users_removed"] == 1
            assert run["stats"]["memberships_removed"] == len(admin.team_ids)

            body = snapshot(client)
            assert admin.id not in {u["id"] for u in body["users"]}
            assert grants_of(body, admin.id) == []
            assert all(admin.id not in t["member_ids"] for t in body["teams"])
            everyone = snapshot(client, include_removed="true")
            removed = next(u for u in everyone["users"] if u["id"] == admin.id)
            assert removed["status"] == "deleted"
            assert removed["removed_at"]
            assert removed["team_ids"] == []
            assert grants_of(everyone, admin.id) == []
            single = client.get(f"/api/v1/users/{admin.id}").json()
            assert single["status"] == "deleted"

            feed = client.get("/api/v1/changes", params={"since": old}).json()
            ops = {(c["resource_type"], c["resource_id"], c["op"]) for c in feed["changes"]}
            assert ops == {
                ("user", admin.id, "delete"),
                ("grant", f"workspace:{sim.workspace.id_code}:member:user:{admin.id}", "delete"),
            } | {
                ("grant", f"team:{tid}:member:user:{admin.id}", "delete") for tid in admin.team_ids
            }

            sim.workspace.upsert_admin(admin)
            run = resync(service)
            assert run["stats"]["users_added"] == 1
            assert run["stats"]["memberships_added"] == len(admin.team_ids)
            back = snapshot(client)
            user = next(u for u in back["users"] if u["id"] == admin.id)
            assert user["status"] == "enabled"
            assert "removed_at" not in user
            assert sorted(user["team_ids"]) == sorted(admin.team_ids)
            assert served_truth(back) == simulator_truth(sim)


class TestMemberships:
    def test_memberships_are_the_union_of_both_sides(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        state = sim.workspace.to_dict()
        admins = {a["id"]: a for a in state["admins"]}
        teams = {t["id"]: t for t in state["teams"]}
        only_admin_side = next(
            (a, t) for a in admins for t in teams if t not in admins[a]["team_ids"]
        )
        only_team_side = next(
            (a, t)
            for a in admins
            for t in teams
            if t not in admins[a]["team_ids"] and (a, t) != only_admin_side
        )
        admins[only_admin_side[0]]["team_ids"].append(only_admin_side[1])
        teams[only_team_side[1]]["admin_ids"].append(only_team_side[0])
        put_state(sim, state)
        assert sim.workspace.check_consistency()  # the two sides really disagree now

        run = resync(service)
        assert run["status"] == "succeeded"
        assert run["stats"]["memberships_added"] == 2
        with service.client() as client:
            body = snapshot(client)
        users, served_teams = served_truth(body)
        for user_id, team_id in (only_admin_side, only_team_side):
            assert team_id in users[user_id]
            assert user_id in served_teams[team_id]
            assert f"team:{team_id}:member:user:{user_id}" in {g["id"] for g in body["grants"]}
        assert_consistent(body)

    def test_a_team_listing_an_unknown_teammate_is_served_without_it(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        expected = simulator_truth(sim)
        state = sim.workspace.to_dict()
        state["teams"][0]["admin_ids"].append("999999999")
        state["admins"][0]["team_ids"].append("777777")  # and a teammate in an unknown team
        put_state(sim, state)

        run = resync(service)
        assert run["status"] == "succeeded"
        assert sum(run["stats"].values()) == 0
        with service.client() as client:
            body = snapshot(client)
        assert "999999999" not in {u["id"] for u in body["users"]}
        assert served_truth(body) == expected
        assert_consistent(body)


def put_state(sim: SimulatorServer, state: dict[str, Any]) -> None:
    response = httpx.put(f"{sim.url}/_sim/state", params={"strict": "false"}, json=state)
    assert response.status_code == 200, response.text


def assert_consistent(body: dict[str, Any]) -> None:
    user_ids = {u["id"] for u in body["users"]}
    team_ids = {t["id"] for t in body["teams"]}
    for team in body["teams"]:
        assert set(team["member_ids"]) <= user_ids
    for user in body["users"]:
        assert set(user["team_ids"]) <= team_ids
    for grant in body["grants"]:
        assert grant["principal"]["resource_id"] in user_ids


class TestMassRemovalBrake:
    def test_removing_more_than_the_fraction_is_blocked_until_forced(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        with sim.workspace.lock:
            doomed = list(sim.workspace.admins)[:8]  # 8 of 30 is over 25%, and over 5
        for admin_id in doomed:
            sim.workspace.remove_admin(admin_id)
        with service.client() as client:
            before = raw_snapshot(client)

            run = resync(service)
            assert run["status"] == "blocked"
            assert run["error"]["code"] == "mass_removal_blocked"
            assert set(run["stats"].values()) == {0}
            assert raw_snapshot(client) == before
            assert "blocked_mass_removal" in readyz(service)["problems"]

            forced = resync(service, force=True)
            assert forced["status"] == "succeeded"
            assert forced["stats"]["users_removed"] == 8
            body = snapshot(client)
            assert served_truth(body) == simulator_truth(sim)
            assert "blocked_mass_removal" not in readyz(service)["problems"]

    def test_an_empty_admin_list_is_blocked(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        sim.add_fault(path="/admins", body="empty_admins", times=100)
        with service.client() as client:
            before = raw_snapshot(client)
            run = resync(service)
            assert run["status"] == "blocked"
            assert run["error"]["code"] == "mass_removal_blocked"
            assert raw_snapshot(client) == before
            assert "blocked_mass_removal" in readyz(service)["problems"]


# ---- the brake at the function level -------------------------------------------------------


def fetched(n_admins: int, *, ids: list[str] | None = None) -> FetchedWorkspace:
    admin_ids = ids if ids is not None else [str(1000 + i) for i in range(n_admins)]
    admins = [
        IntercomAdmin(id=i, name=f"Teammate {i}", email=f"t{i}@acme.example", team_ids=["1"])
        for i in admin_ids
    ]
    return FetchedWorkspace(
        workspace=IntercomWorkspace(id_code="ws1", name="Acme", region="US"),
        admins=admins,
        teams=[IntercomTeam(id="1", name="Support", admin_ids=admin_ids[:1])],
        fetch_started_at=utcnow(),
        roles_supported=False,
    )


class _Rollback(Exception):
    def __init__(self, result: BaselineResult) -> None:
        super().__init__("rollback")
        self.result = result


def outcome(
    db: Database, stored: int, kept: int, **kwargs: Any
) -> BaselineResult | MassRemovalBlocked:
    """Seed `stored` teammates, then apply a fetch that keeps the first `kept` of them, in one
    transaction that is then rolled back, so every case starts from the same empty store."""
    survivors = fetched(stored).admins[:kept]
    try:
        with db.writing() as session:
            apply_baseline(session, fetched(stored))
            raise _Rollback(
                apply_baseline(session, fetched(0, ids=[a.id for a in survivors]), **kwargs)
            )
    except _Rollback as rollback:
        return rollback.result
    except MassRemovalBlocked as blocked:
        return blocked


BRAKE_CASES = [
    # (stored, kept, MAX_REMOVAL_FRACTION, blocked?)
    (30, 22, 0.25, True),  # 8 removed: over 25% and over 5
    (30, 23, 0.25, False),  # 7 removed: 23%
    (10, 5, 0.25, False),  # 5 removed: 50%, but not more than 5
    (20, 14, 0.25, True),  # 6 removed: 30%
    (20, 14, 0.5, False),  # the fraction is configurable
    (30, 0, 0.25, True),  # an empty list while teammates exist
    (0, 0, 0.25, False),  # an empty list for an empty store
]


def test_the_brake_thresholds(store: Database) -> None:
    for stored, kept, fraction, blocked in BRAKE_CASES:
        case = f"{stored} stored, {kept} kept, fraction {fraction}"
        result = outcome(store, stored, kept, max_removal_fraction=fraction)
        if blocked:
            assert isinstance(result, MassRemovalBlocked), case
            assert (result.would_remove, result.active_users) == (stored - kept, stored), case
            result = outcome(store, stored, kept, max_removal_fraction=fraction, force=True)
        assert isinstance(result, BaselineResult), case
        assert result.stats.users_removed == stored - kept, case
    with store.reading() as session:
        assert current_version(session) == 0  # every case was rolled back


def test_a_no_op_apply_writes_nothing(store: Database) -> None:
    result = outcome(store, 12, 12)
    assert isinstance(result, BaselineResult)
    assert result.version_before == result.version_after == 1
    assert not result.changes
