"""Provisioning (issue 19.2–19.4, 19.6, 19.7): the write endpoints against the real
service and the simulator's write endpoints, on SQLite and PostgreSQL.

"Nothing sent to Intercom" is read from the simulator's request log (`/_sim/requests`)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from app.provisioning.removal import removal_api_version
from app.settings import ConfigError, load_settings, startup_warnings
from app.simulator import SimTeam, SimulatorServer
from app.store import provisioning as records
from app.store.engine import Database
from app.store.models import ProvisioningRequest, utcnow
from harness.service import OPERATOR_TOKEN, READ_TOKEN, SIM_TOKEN, ServiceServer, snapshot
from harness.waiting import wait_for

PROVISIONING_TOKEN = "test-provisioning-token-0123456789"
REASSIGN = ("messages", "owner", "articles", "conversations")


@dataclass
class Cast:
    """Teammates with parts to play, taken from the simulator's workspace."""

    me: str  # the teammate GET /me answers as (the token's own)
    target: str  # REMOVAL_REASSIGN_ADMIN_ID
    protected: str  # in PROTECTED_ADMIN_IDS
    victims: list[str]  # humans in at least one team, free to remove


def cast_of(sim: SimulatorServer) -> Cast:
    with sim.workspace.lock:
        admins = list(sim.workspace.admins.values())
    humans = [a for a in admins if not a.email.startswith("operator+")]
    me, target, protected = humans[0].id, humans[1].id, humans[2].id
    victims = [a.id for a in humans[3:] if a.team_ids]
    return Cast(me, target, protected, victims)


@pytest.fixture
def cast(sim: SimulatorServer) -> Cast:
    return cast_of(sim)


@pytest.fixture
def start_service(
    start_service: Callable[..., ServiceServer],
) -> Callable[..., ServiceServer]:
    """conftest's, with the activity log off: its read after every baseline runs on its own
    schedule, and would otherwise show up in the simulator's request log that these tests
    read to prove a refused request sent nothing to Intercom."""

    def start(**overrides: Any) -> ServiceServer:
        overrides.setdefault("activity_log_enabled", False)
        return start_service(**overrides)

    return start


@pytest.fixture
def service(start_service: Callable[..., ServiceServer]) -> ServiceServer:
    return start_service()


@pytest.fixture
def prov(start_service: Callable[..., ServiceServer], cast: Cast) -> ServiceServer:
    return start_service(
        provisioning_api_tokens=PROVISIONING_TOKEN,
        removal_reassign_admin_id=cast.target,
        protected_admin_ids=cast.protected,
    )


@pytest.fixture
def writer(prov: ServiceServer) -> Iterator[httpx.Client]:
    with prov.client(PROVISIONING_TOKEN) as client:
        yield client


@pytest.fixture
def reader(prov: ServiceServer) -> Iterator[httpx.Client]:
    with prov.client(READ_TOKEN) as client:
        yield client


def sim_switch(sim: SimulatorServer, **switches: Any) -> dict[str, Any]:
    response = httpx.put(f"{sim.url}/_sim/provisioning", json=switches)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def sent(sim: SimulatorServer) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in sim.requests()]


def writes(sim: SimulatorServer) -> list[tuple[str, str]]:
    return [(m, p) for m, p in sent(sim) if m in ("PUT", "DELETE", "POST")]


def version(reader: httpx.Client) -> int:
    response = reader.get("/api/v1/changes", params={"since": 0, "limit": 1})
    assert response.status_code == 200, response.text
    return int(response.json()["version"])


def team_with(sim: SimulatorServer, user_id: str) -> str:
    with sim.workspace.lock:
        return sim.workspace.admins[user_id].team_ids[0]


def team_without(sim: SimulatorServer, user_id: str) -> str:
    with sim.workspace.lock:
        teams = [t.id for t in sim.workspace.teams.values() if user_id not in t.admin_ids]
        return next(t for t in teams if len(sim.workspace.teams[t].admin_ids) > 0)


def fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:12]


# -- settings ---------------------------------------------------------------------------------


def test_provisioning_settings_follow_the_token_rules() -> None:
    settings = load_settings(
        _env_file=None,
        provisioning_api_tokens=f" {PROVISIONING_TOKEN} , other-provisioning-token-1 ",
        removal_reassign_admin_id=" 0 ",
        protected_admin_ids="991267400, 991267401",
    )
    assert [t.get_secret_value() for t in settings.provisioning_api_tokens] == [
        PROVISIONING_TOKEN,
        "other-provisioning-token-1",
    ]
    assert settings.removal_reassign_admin_id == "0"
    assert settings.protected_admin_ids == ["991267400", "991267401"]
    assert PROVISIONING_TOKEN in settings.secret_values()
    blank = load_settings(_env_file=None, removal_reassign_admin_id="", protected_admin_ids="")
    assert blank.removal_reassign_admin_id is None
    assert blank.protected_admin_ids == []
    with pytest.raises(ConfigError, match="PROVISIONING_API_TOKENS") as caught:
        load_settings(_env_file=None, provisioning_api_tokens="short-secret")
    assert "short-secret" not in str(caught.value)
    with pytest.raises(ConfigError, match="REMOVAL_REASSIGN_ADMIN_ID"):
        load_settings(_env_file=None, removal_reassign_admin_id="alice")
    with pytest.raises(ConfigError, match="PROTECTED_ADMIN_IDS"):
        load_settings(_env_file=None, protected_admin_ids="991267400,root")
    shared = load_settings(
        _env_file=None,
        operator_api_tokens=PROVISIONING_TOKEN,
        provisioning_api_tokens=PROVISIONING_TOKEN,
    )
    assert any("PROVISIONING_API_TOKENS" in w for w in startup_warnings(shared))


# -- removal ----------------------------------------------------------------------------------


def test_removal_version_is_2_17_unless_the_configured_one_is_newer() -> None:
    assert removal_api_version("2.14") == "2.17"
    assert removal_api_version("2.17") == "2.17"
    assert removal_api_version("2.9") == "2.17"
    assert removal_api_version("2.18") == "2.18"
    assert removal_api_version("3.0") == "3.0"
    assert removal_api_version("Preview") == "Preview"
    assert removal_api_version("Unstable") == "Unstable"


class TestRemoval:
    def test_a_removal_calls_intercom_once_and_the_next_poll_shows_it(
        self,
        sim: SimulatorServer,
        prov: ServiceServer,
        writer: httpx.Client,
        reader: httpx.Client,
        cast: Cast,
    ) -> None:
        victim = cast.victims[0]
        teams = {u["id"]: set(u["team_ids"]) for u in snapshot(reader)["users"]}[victim]
        assert teams
        before = version(reader)
        sim.clear_requests()

        response = writer.delete(f"/api/v1/users/{victim}")

        assert response.status_code == 200, response.text
        body = response.json()
        assert body["action"] == "remove_user"
        assert body["result"] == "removed"
        assert body["user_id"] == victim
        assert body["team_id"] is None
        assert body["dry_run"] is False
        assert body["error"] is None
        assert body["requested_by"] == fingerprint(PROVISIONING_TOKEN)
        assert body["intercom"]["method"] == "DELETE"
        assert body["intercom"]["status"] == 200
        assert body["intercom"]["path"].startswith(f"/admins/remove?admin_id={victim}&")
        removals = [r for r in sim.requests() if r.path == "/admins/remove"]
        assert len(removals) == 1
        query = httpx.QueryParams(removals[0].query)
        assert query["admin_id"] == victim
        for name in REASSIGN:
            key = "reassign_owner_admin_id" if name == "owner" else None
            key = key or (
                "reassign_articles_author_id" if name == "articles" else f"reassign_{name}_admin_id"
            )
            assert query[key] == cast.target
        assert removals[0].headers["intercom-version"] == "2.17"
        assert victim not in sim.workspace.admins

        # Truth first: the very next read shows it, with a new version and change-log rows.
        served = snapshot(reader)
        assert victim not in {u["id"] for u in served["users"]}
        assert all(victim not in t["member_ids"] for t in served["teams"])
        assert reader.get(f"/api/v1/users/{victim}").json()["status"] == "deleted"
        changes = reader.get("/api/v1/changes", params={"since": before}).json()
        assert changes["version"] == before + 1
        logged = {(c["resource_type"], c["resource_id"], c["op"]) for c in changes["changes"]}
        assert ("user", victim, "delete") in logged
        for team_id in teams:
            assert ("grant", f"team:{team_id}:member:user:{victim}", "delete") in logged

    def test_the_later_webhook_and_the_next_baseline_change_nothing(
        self,
        sim: SimulatorServer,
        prov: ServiceServer,
        writer: httpx.Client,
        reader: httpx.Client,
        cast: Cast,
    ) -> None:
        victim = cast.victims[1]
        sim_switch(sim, webhook_urls=[f"{prov.url}/webhooks/intercom"])
        assert writer.delete(f"/api/v1/users/{victim}").json()["result"] == "removed"
        after = version(reader)
        etag = reader.get("/api/v1/snapshot").headers["etag"]

        # The simulator sent admin.removed_from_workspace; the service applies it.
        delivery = wait_for(
            lambda: httpx.get(f"{sim.url}/_sim/provisioning").json()["deliveries"],
            what="the removal notification",
        )
        assert delivery[0]["admin_id"] == victim
        assert delivery[0]["status"] == 200
        with prov.client(OPERATOR_TOKEN) as operator:
            event = wait_for(
                lambda: [
                    e
                    for e in operator.get("/webhook-events").json()["items"]
                    if e["teammate_id"] == victim and e["outcome"] != "pending"
                ],
                what="the notification to be applied",
            )[0]
            assert event["topic"] == "admin.removed_from_workspace"
            assert event["outcome"] in ("applied", "ignored")
            assert version(reader) == after

            run = operator.post("/resync").json()
            finished = wait_for(
                lambda: (r := operator.get(f"/sync-runs/{run['id']}").json())["finished_at"] and r,
                what="the baseline",
            )
        assert finished["status"] == "succeeded", finished
        assert version(reader) == after
        assert reader.get("/api/v1/snapshot").headers["etag"] == etag

    def test_removing_a_removed_teammate_answers_already_removed_and_sends_nothing(
        self, sim: SimulatorServer, writer: httpx.Client, cast: Cast
    ) -> None:
        victim = cast.victims[2]
        assert writer.delete(f"/api/v1/users/{victim}").json()["result"] == "removed"
        sim.clear_requests()
        again = writer.delete(f"/api/v1/users/{victim}")
        assert again.status_code == 200
        assert again.json()["result"] == "already_removed"
        assert again.json()["intercom"] is None
        assert sent(sim) == []

    def test_the_body_names_the_target_and_overrides_the_setting(
        self, sim: SimulatorServer, writer: httpx.Client, cast: Cast
    ) -> None:
        victim = cast.victims[3]
        response = writer.request("DELETE", f"/api/v1/users/{victim}", json={"reassign_to": "0"})
        assert response.status_code == 200, response.text
        query = httpx.QueryParams(
            next(r for r in sim.requests() if r.path == "/admins/remove").query
        )
        assert {query[k] for k in query if k.startswith("reassign_")} == {"0"}

    def test_a_reassignment_target_that_is_no_teammate_is_refused(
        self, sim: SimulatorServer, writer: httpx.Client, cast: Cast
    ) -> None:
        sim.clear_requests()
        response = writer.request(
            "DELETE", f"/api/v1/users/{cast.victims[0]}", json={"reassign_to": "4242"}
        )
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "reassign_target_invalid"
        assert writes(sim) == []


def test_without_a_target_a_removal_is_refused_and_nothing_is_sent(
    sim: SimulatorServer, start_service: Callable[..., ServiceServer], cast: Cast
) -> None:
    service = start_service(provisioning_api_tokens=PROVISIONING_TOKEN)
    sim.clear_requests()
    with service.client(PROVISIONING_TOKEN) as writer:
        response = writer.delete(f"/api/v1/users/{cast.victims[0]}")
    assert response.status_code == 400
    body = response.json()
    assert body["error"]["code"] == "reassign_target_required"
    assert "REMOVAL_REASSIGN_ADMIN_ID" in body["error"]["message"]
    with service.client(PROVISIONING_TOKEN) as writer:
        key = {"Idempotency-Key": "no-target"}
        first = writer.delete(f"/api/v1/users/{cast.victims[0]}", headers=key)
        again = writer.delete(f"/api/v1/users/{cast.victims[0]}", headers=key)
    assert first.status_code == again.status_code == 400
    assert again.json() == first.json() == body
    assert sent(sim) == []
    with service.client(OPERATOR_TOKEN) as operator:
        audit = operator.get("/provisioning-requests").json()["items"][0]
    assert audit["result"] == "failed"
    assert audit["error"]["code"] == "reassign_target_required"


# -- guard rails ------------------------------------------------------------------------------


class TestGuardRails:
    @pytest.mark.parametrize("who", ["me", "target", "protected"])
    def test_protected_teammates_are_never_removed_nor_taken_out(
        self,
        sim: SimulatorServer,
        writer: httpx.Client,
        reader: httpx.Client,
        cast: Cast,
        who: str,
    ) -> None:
        user_id = getattr(cast, who)
        with sim.workspace.lock:
            team_id = sim.workspace.admins[user_id].team_ids[0]
        before = version(reader)
        sim.clear_requests()
        removal = writer.delete(f"/api/v1/users/{user_id}")
        taken_out = writer.delete(f"/api/v1/teams/{team_id}/members/{user_id}")
        dry = writer.delete(f"/api/v1/users/{user_id}", params={"dry_run": "true"})
        for response in (removal, taken_out, dry):
            assert response.status_code == 409, response.text
            assert response.json()["error"]["code"] == "protected_teammate"
            assert response.json()["result"] == "failed"
        assert writes(sim) == []
        assert user_id in sim.workspace.admins
        assert version(reader) == before

    def test_a_protected_teammate_can_still_be_added_to_a_team(
        self, sim: SimulatorServer, writer: httpx.Client, cast: Cast
    ) -> None:
        team_id = team_without(sim, cast.protected)
        response = writer.put(f"/api/v1/teams/{team_id}/members/{cast.protected}")
        assert response.status_code == 200, response.text
        assert response.json()["result"] == "added"

    def test_the_last_member_cannot_be_taken_out(
        self, sim: SimulatorServer, prov: ServiceServer, writer: httpx.Client, cast: Cast
    ) -> None:
        lone = cast.victims[0]
        sim.workspace.upsert_team(SimTeam(id="990001", name="Solo", admin_ids=[lone]))
        with prov.client(OPERATOR_TOKEN) as operator:
            run = operator.post("/resync").json()
            wait_for(
                lambda: operator.get(f"/sync-runs/{run['id']}").json()["status"] == "succeeded",
                what="the baseline",
            )
        sim.clear_requests()
        dry = writer.delete(f"/api/v1/teams/990001/members/{lone}", params={"dry_run": "true"})
        real = writer.delete(f"/api/v1/teams/990001/members/{lone}")
        for response in (dry, real):
            assert response.status_code == 409, response.text
            assert response.json()["error"]["code"] == "team_cannot_be_empty"
        assert writes(sim) == []
        assert sim.workspace.teams["990001"].admin_ids == [lone]


# -- team members -----------------------------------------------------------------------------


class TestTeamMembers:
    def test_adding_and_taking_out_go_through_a_preview_put_and_show_at_once(
        self,
        sim: SimulatorServer,
        prov: ServiceServer,
        writer: httpx.Client,
        reader: httpx.Client,
        cast: Cast,
    ) -> None:
        user_id = cast.victims[0]
        team_id = team_without(sim, user_id)
        members_before = list(sim.workspace.teams[team_id].admin_ids)
        before = version(reader)
        sim.clear_requests()

        added = writer.put(f"/api/v1/teams/{team_id}/members/{user_id}")

        assert added.status_code == 200, added.text
        body = added.json()
        assert (body["action"], body["result"]) == ("add_team_member", "added")
        assert body["team_id"] == team_id
        assert body["user_id"] == user_id
        assert body["intercom"]["method"] == "PUT"
        assert body["intercom"]["status"] == 200
        assert body["intercom"]["path"] == f"/teams/{team_id}"
        assert sent(sim) == [("GET", f"/teams/{team_id}"), ("PUT", f"/teams/{team_id}")]
        put = sim.requests()[1]
        assert put.headers["intercom-version"] == "Preview"
        assert sorted(sim.workspace.teams[team_id].admin_ids) == sorted([*members_before, user_id])
        grant = f"team:{team_id}:member:user:{user_id}"
        assert grant in {g["id"] for g in snapshot(reader)["grants"]}
        changes = reader.get("/api/v1/changes", params={"since": before}).json()["changes"]
        assert [(c["resource_type"], c["resource_id"], c["op"]) for c in changes] == [
            ("grant", grant, "upsert")
        ]

        # The next baseline agrees with what was stored.
        after = version(reader)
        with prov.client(OPERATOR_TOKEN) as operator:
            run = operator.post("/resync").json()
            finished = wait_for(
                lambda: (r := operator.get(f"/sync-runs/{run['id']}").json())["finished_at"] and r,
                what="the baseline",
            )
        assert finished["status"] == "succeeded"
        assert version(reader) == after

        again = writer.put(f"/api/v1/teams/{team_id}/members/{user_id}")
        assert again.json()["result"] == "unchanged"
        assert [m for m, _ in sent(sim)].count("PUT") == 1

        taken_out = writer.delete(f"/api/v1/teams/{team_id}/members/{user_id}")
        assert taken_out.status_code == 200, taken_out.text
        assert (taken_out.json()["action"], taken_out.json()["result"]) == (
            "remove_team_member",
            "removed",
        )
        assert sorted(sim.workspace.teams[team_id].admin_ids) == sorted(members_before)
        assert grant not in {g["id"] for g in snapshot(reader)["grants"]}
        assert user_id in {u["id"] for u in snapshot(reader)["users"]}

        not_member = writer.delete(f"/api/v1/teams/{team_id}/members/{user_id}")
        assert not_member.json()["result"] == "unchanged"
        assert [m for m, _ in sent(sim)].count("PUT") == 2

    def test_a_dry_run_answers_what_would_be_sent_and_calls_nothing(
        self, sim: SimulatorServer, writer: httpx.Client, reader: httpx.Client, cast: Cast
    ) -> None:
        # The token's own teammate is learned once per process (GET /me); learn it first.
        writer.delete(f"/api/v1/users/{cast.me}", params={"dry_run": "true"})
        user_id = cast.victims[0]
        team_id = team_without(sim, user_id)
        members = list(sim.workspace.teams[team_id].admin_ids)
        before = version(reader)
        sim.clear_requests()

        add = writer.put(f"/api/v1/teams/{team_id}/members/{user_id}?dry_run=true")
        removal = writer.delete(f"/api/v1/users/{user_id}", params={"dry_run": "true"})

        assert add.status_code == 200, add.text
        assert add.json()["result"] == "would_add"
        assert add.json()["dry_run"] is True
        intercom = add.json()["intercom"]
        assert (intercom["method"], intercom["path"], intercom["status"]) == (
            "PUT",
            f"/teams/{team_id}",
            None,
        )
        assert sorted(intercom["body"]["admin_ids"]) == sorted(int(m) for m in [*members, user_id])
        assert removal.json()["result"] == "would_remove"
        assert removal.json()["intercom"]["path"].startswith(f"/admins/remove?admin_id={user_id}")
        assert sent(sim) == []
        assert version(reader) == before
        assert user_id in sim.workspace.admins


# -- Intercom's answers -----------------------------------------------------------------------


class TestIntercomAnswers:
    def test_no_remove_admins_scope_is_502_naming_the_scope_and_changes_nothing(
        self, sim: SimulatorServer, writer: httpx.Client, reader: httpx.Client, cast: Cast
    ) -> None:
        sim_switch(sim, remove_admins_scope=False)
        before = version(reader)
        response = writer.delete(f"/api/v1/users/{cast.victims[0]}")
        assert response.status_code == 502, response.text
        error = response.json()["error"]
        assert error["code"] == "intercom_refused"
        assert "remove_admins" in error["message"]
        assert "403 forbidden" in error["message"]
        assert response.json()["intercom"]["status"] == 403
        assert version(reader) == before
        assert cast.victims[0] in {u["id"] for u in snapshot(reader)["users"]}

    @pytest.mark.parametrize(
        ("mode", "needle"),
        [("api_plan_restricted", "Preview"), ("forbidden", "permission to manage teams")],
    )
    def test_team_writes_refused_by_intercom_are_502(
        self,
        sim: SimulatorServer,
        writer: httpx.Client,
        reader: httpx.Client,
        cast: Cast,
        mode: str,
        needle: str,
    ) -> None:
        sim_switch(sim, team_writes=mode)
        user_id = cast.victims[0]
        team_id = team_without(sim, user_id)
        before = version(reader)
        response = writer.put(f"/api/v1/teams/{team_id}/members/{user_id}")
        assert response.status_code == 502, response.text
        error = response.json()["error"]
        assert error["code"] == "intercom_refused"
        assert mode in error["message"]
        assert needle in error["message"]
        assert version(reader) == before

    def test_a_revoked_token_is_502(
        self, sim: SimulatorServer, writer: httpx.Client, cast: Cast
    ) -> None:
        sim.add_fault("/admins/remove", 401, error_code="token_revoked")
        response = writer.delete(f"/api/v1/users/{cast.victims[0]}")
        assert response.status_code == 502
        assert response.json()["error"]["code"] == "intercom_refused"
        assert "token_revoked" in response.json()["error"]["message"]
        assert PROVISIONING_TOKEN not in response.text
        assert SIM_TOKEN not in response.text

    def test_rate_limited_past_the_budget_is_503_with_retry_after(
        self, sim: SimulatorServer, writer: httpx.Client, reader: httpx.Client, cast: Cast
    ) -> None:
        sim.add_fault("/admins/remove", 429, reset_in_seconds=120)
        before = version(reader)
        response = writer.delete(f"/api/v1/users/{cast.victims[0]}")
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "intercom_unavailable"
        assert 30 < int(response.headers["retry-after"]) <= 121
        assert version(reader) == before
        assert cast.victims[0] in sim.workspace.admins

    def test_server_errors_are_retried_then_503(
        self, sim: SimulatorServer, writer: httpx.Client, cast: Cast
    ) -> None:
        user_id = cast.victims[0]
        team_id = team_without(sim, user_id)
        sim.add_fault(f"/teams/{team_id}", 503, times=100)
        sim.clear_requests()
        response = writer.put(f"/api/v1/teams/{team_id}/members/{user_id}")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "intercom_unavailable"
        assert "retry-after" in response.headers
        assert len(sent(sim)) == 3  # INTERCOM_MAX_ATTEMPTS in the tests

    def test_a_transient_failure_frees_the_idempotency_key(
        self, sim: SimulatorServer, writer: httpx.Client, cast: Cast
    ) -> None:
        sim.add_fault("/admins/remove", 503, times=3)
        headers = {"Idempotency-Key": "retry-after-503"}
        first = writer.delete(f"/api/v1/users/{cast.victims[0]}", headers=headers)
        assert first.status_code == 503
        second = writer.delete(f"/api/v1/users/{cast.victims[0]}", headers=headers)
        assert second.status_code == 200, second.text
        assert second.json()["result"] == "removed"

    @pytest.mark.parametrize(
        ("conflicts", "status", "result", "puts"),
        [
            (["declined"], 200, "added", 2),
            (["partial"], 200, "added", 1),
            (["declined", "declined", "declined"], 409, "failed", 3),
        ],
    )
    def test_a_409_means_read_again_and_retry_at_most_three_times(
        self,
        sim: SimulatorServer,
        writer: httpx.Client,
        cast: Cast,
        conflicts: list[str],
        status: int,
        result: str,
        puts: int,
    ) -> None:
        user_id = cast.victims[0]
        team_id = team_without(sim, user_id)
        sim_switch(sim, conflicts=conflicts)
        sim.clear_requests()
        response = writer.put(f"/api/v1/teams/{team_id}/members/{user_id}")
        assert response.status_code == status, response.text
        assert response.json()["result"] == result
        assert [m for m, _ in sent(sim)].count("PUT") == puts
        if status == 409:
            assert response.json()["error"]["code"] == "intercom_conflict"
            assert user_id not in sim.workspace.teams[team_id].admin_ids
        else:
            assert user_id in sim.workspace.teams[team_id].admin_ids


# -- idempotency and audit --------------------------------------------------------------------


class TestIdempotencyAndAudit:
    def test_a_repeated_key_returns_the_first_answer_without_calling_intercom(
        self, sim: SimulatorServer, writer: httpx.Client, cast: Cast
    ) -> None:
        headers = {"Idempotency-Key": "c1-task-0001"}
        first = writer.delete(f"/api/v1/users/{cast.victims[0]}", headers=headers)
        assert first.status_code == 200
        sim.clear_requests()
        again = writer.delete(f"/api/v1/users/{cast.victims[0]}", headers=headers)
        assert again.status_code == 200
        assert again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
        assert sent(sim) == []

    def test_a_key_reused_for_another_request_is_409(
        self, sim: SimulatorServer, writer: httpx.Client, cast: Cast
    ) -> None:
        headers = {"Idempotency-Key": "c1-task-0002"}
        writer.delete(f"/api/v1/users/{cast.victims[0]}", headers=headers)
        sim.clear_requests()
        for other in (
            writer.delete(f"/api/v1/users/{cast.victims[1]}", headers=headers),
            writer.delete(
                f"/api/v1/users/{cast.victims[0]}", headers=headers, params={"dry_run": "true"}
            ),
            writer.request(
                "DELETE",
                f"/api/v1/users/{cast.victims[0]}",
                headers=headers,
                json={"reassign_to": "0"},
            ),
        ):
            assert other.status_code == 409, other.text
            assert other.json()["error"]["code"] == "idempotency_key_reused"
        assert sent(sim) == []
        assert cast.victims[1] in sim.workspace.admins

    def test_keys_are_per_token(
        self,
        sim: SimulatorServer,
        start_service: Callable[..., ServiceServer],
        cast: Cast,
    ) -> None:
        other_token = "test-provisioning-token-second-01"
        service = start_service(
            provisioning_api_tokens=f"{PROVISIONING_TOKEN},{other_token}",
            removal_reassign_admin_id=cast.target,
        )
        headers = {"Idempotency-Key": "shared-key"}
        with service.client(PROVISIONING_TOKEN) as one, service.client(other_token) as two:
            a = one.delete(f"/api/v1/users/{cast.victims[0]}", headers=headers)
            b = two.delete(f"/api/v1/users/{cast.victims[1]}", headers=headers)
        assert (a.json()["result"], b.json()["result"]) == ("removed", "removed")
        assert b.json()["requested_by"] == fingerprint(other_token)

    def test_every_request_is_listed_newest_first_for_operators(
        self, sim: SimulatorServer, prov: ServiceServer, writer: httpx.Client, cast: Cast
    ) -> None:
        first = writer.delete(f"/api/v1/users/{cast.victims[0]}").json()
        refused = writer.delete(f"/api/v1/users/{cast.protected}").json()
        with prov.client(OPERATOR_TOKEN) as operator:
            listed = operator.get("/provisioning-requests", params={"limit": 10})
            assert operator.get("/provisioning-requests?limit=0").status_code == 400
        assert listed.status_code == 200
        items = listed.json()["items"]
        assert [i["id"] for i in items[:2]] == [refused["id"], first["id"]]
        assert items[1] == first
        assert items[0]["error"]["code"] == "protected_teammate"
        for item in items:
            assert set(item) == {
                "id",
                "action",
                "user_id",
                "team_id",
                "dry_run",
                "result",
                "requested_at",
                "finished_at",
                "requested_by",
                "intercom",
                "error",
            }
            assert item["finished_at"] >= item["requested_at"]
        assert PROVISIONING_TOKEN not in listed.text
        with prov.client(READ_TOKEN) as reader, prov.client(PROVISIONING_TOKEN) as other:
            assert reader.get("/provisioning-requests").status_code == 401
            assert other.get("/provisioning-requests").status_code == 401

    def test_each_request_logs_one_line_without_the_token(
        self, writer: httpx.Client, cast: Cast, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.clear()
        answer = writer.delete(f"/api/v1/users/{cast.victims[0]}").json()
        logged = [r for r in caplog.records if hasattr(r, "provisioning_id")]
        assert len(logged) == 1, logged
        fields = vars(logged[0])
        assert fields["provisioning_id"] == answer["id"]
        assert fields["action"] == "remove_user"
        assert fields["result"] == "removed"
        assert fields["requested_by"] == fingerprint(PROVISIONING_TOKEN)
        assert PROVISIONING_TOKEN not in str(fields)

    def test_metrics_count_requests_by_action_and_result(
        self, prov: ServiceServer, writer: httpx.Client, cast: Cast
    ) -> None:
        def count() -> float:
            text = httpx.get(f"{prov.url}/metrics").text
            for line in text.splitlines():
                if line.startswith(
                    'intercom_sync_provisioning_requests_total{action="remove_user",'
                    'result="would_remove"}'
                ):
                    return float(line.rsplit(" ", 1)[1])
            return 0.0

        before = count()
        writer.delete(f"/api/v1/users/{cast.victims[0]}", params={"dry_run": "true"})
        assert count() == before + 1


# -- bad input --------------------------------------------------------------------------------

HUGE = b'{"reassign_to": "' + b"1" * 20_000 + b'"}'


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/api/v1/users/{user}"),
        ("PUT", "/api/v1/teams/{team}/members/{user}"),
        ("DELETE", "/api/v1/teams/{team}/members/{user}"),
    ],
)
def test_bad_input_gets_its_status_and_nothing_reaches_intercom(
    sim: SimulatorServer,
    prov: ServiceServer,
    reader: httpx.Client,
    cast: Cast,
    method: str,
    path: str,
) -> None:
    user_id = cast.victims[0]
    team_id = team_with(sim, user_id) if method == "DELETE" else team_without(sim, user_id)
    good = path.format(user=user_id, team=team_id)
    before = version(reader)
    sim.clear_requests()
    auth = {"Authorization": f"Bearer {PROVISIONING_TOKEN}"}
    cases: list[tuple[str, dict[str, str], bytes | None, int, str]] = [
        (path.format(user="4242", team=team_id), auth, None, 404, "not_found"),
        (path.format(user="abc", team=team_id), auth, None, 400, "invalid_request"),
        (path.format(user="1" * 21, team=team_id), auth, None, 400, "invalid_request"),
        (good, auth, b"{not json", 400, "invalid_json"),
        (good, auth, b"[1, 2]", 400, "invalid_json"),
        (good, auth, b'{"surprise": 1}', 400, "invalid_request"),
        (good, auth, HUGE, 413, "payload_too_large"),
        (good, {**auth, "Idempotency-Key": "with space"}, None, 400, "invalid_idempotency_key"),
        (good, {**auth, "Idempotency-Key": "k" * 256}, None, 400, "invalid_idempotency_key"),
        (good, {"Authorization": f"Bearer {READ_TOKEN}"}, None, 401, "unauthorized"),
        (good, {"Authorization": f"Bearer {OPERATOR_TOKEN}"}, None, 401, "unauthorized"),
        (good, {"Authorization": "Bearer not-a-token-at-all-000"}, None, 401, "unauthorized"),
        (good, {}, None, 401, "unauthorized"),
    ]
    if "{team}" in path:
        cases += [
            (path.format(user=user_id, team="4242"), auth, None, 404, "not_found"),
            (path.format(user=user_id, team="x%20y"), auth, None, 400, "invalid_request"),
        ]
    with httpx.Client(base_url=prov.url, timeout=30) as client:
        for target, headers, body, status, code in cases:
            response = client.request(method, target, headers=headers, content=body)
            assert response.status_code == status, (target, body, response.text)
            assert response.json()["error"]["code"] == code, (target, response.text)
            assert set(response.json()["error"]) == {"code", "message"}
    assert sent(sim) == []
    assert version(reader) == before
    assert user_id in sim.workspace.admins


def test_a_forged_key_for_an_unfinished_request_is_409(
    sim: SimulatorServer, prov: ServiceServer, writer: httpx.Client, cast: Cast
) -> None:
    """A request still in progress holds its key: a second one with the same key (a retry that
    raced the first) waits its turn instead of calling Intercom again."""
    user_id = cast.victims[0]
    team_id = team_without(sim, user_id)
    sim.add_fault(f"/teams/{team_id}", None, delay_seconds=1.5)
    headers = {"Idempotency-Key": "slow-one"}
    answers: list[httpx.Response] = []

    def first() -> None:
        with prov.client(PROVISIONING_TOKEN) as client:
            answers.append(
                client.put(f"/api/v1/teams/{team_id}/members/{user_id}", headers=headers)
            )

    thread = threading.Thread(target=first)
    thread.start()
    wait_for(lambda: sim.requests(f"/teams/{team_id}"), what="the first request to reach Intercom")
    second = writer.put(f"/api/v1/teams/{team_id}/members/{user_id}", headers=headers)
    thread.join(30)
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "idempotency_key_in_use"
    assert answers[0].status_code == 200
    assert [m for m, _ in sent(sim)].count("PUT") == 1


def test_provisioning_is_off_without_tokens(
    sim: SimulatorServer, service: ServiceServer, cast: Cast
) -> None:
    sim.clear_requests()
    for token in (None, READ_TOKEN, "whatever-token-0123456789"):
        with service.client(token) as client:
            response = client.delete(f"/api/v1/users/{cast.victims[0]}")
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "provisioning_disabled"
    assert sent(sim) == []


# -- the simulator's write endpoints (issue 19.6) ----------------------------------------------


class TestSimulatorWrites:
    def call(
        self, sim: SimulatorServer, method: str, path: str, version: str, **kwargs: Any
    ) -> httpx.Response:
        headers = {**sim.auth_headers, "Intercom-Version": version}
        return httpx.request(method, f"{sim.url}{path}", headers=headers, timeout=10, **kwargs)

    def test_removal_needs_2_17_every_reassign_param_and_the_scope(
        self, sim: SimulatorServer, cast: Cast
    ) -> None:
        victim = cast.victims[0]
        full = {
            "admin_id": victim,
            "reassign_messages_admin_id": "0",
            "reassign_owner_admin_id": "0",
            "reassign_articles_author_id": "0",
            "reassign_conversations_admin_id": cast.target,
        }
        assert self.call(sim, "DELETE", "/admins/remove", "2.14", params=full).status_code == 404
        for left_out in [k for k in full if k.startswith("reassign_")]:
            partial = {k: v for k, v in full.items() if k != left_out}
            response = self.call(sim, "DELETE", "/admins/remove", "2.17", params=partial)
            assert response.status_code == 404, left_out
        sim_switch(sim, remove_admins_scope=False)
        refused = self.call(sim, "DELETE", "/admins/remove", "2.17", params=full)
        assert refused.status_code == 403
        assert victim in sim.workspace.admins
        sim_switch(sim, remove_admins_scope=True, webhook_urls=["http://127.0.0.1:9/nowhere"])
        done = self.call(sim, "DELETE", "/admins/remove", "Preview", params=full)
        assert done.status_code == 200
        assert done.json()["id"] == victim
        assert victim not in sim.workspace.admins
        assert all(victim not in t.admin_ids for t in sim.workspace.teams.values())
        deliveries = wait_for(
            lambda: httpx.get(f"{sim.url}/_sim/provisioning").json()["deliveries"],
            what="the notification attempt",
        )
        assert deliveries[0]["topic"] == "admin.removed_from_workspace"
        assert deliveries[0]["admin_id"] == victim
        gone = self.call(sim, "DELETE", "/admins/remove", "2.17", params=full)
        assert gone.status_code == 404

    def test_team_put_is_preview_only_bounded_and_switchable(
        self, sim: SimulatorServer, cast: Cast
    ) -> None:
        team_id = team_with(sim, cast.victims[0])
        path = f"/teams/{team_id}"
        members = [int(cast.victims[0]), int(cast.victims[1])]
        assert self.call(sim, "PUT", path, "2.17", json={"admin_ids": members}).status_code == 404
        bad: dict[str, Any]
        for bad in ({"admin_ids": []}, {"admin_ids": list(range(1, 1002))}, {"ids": members}):
            response = self.call(sim, "PUT", path, "Preview", json=bad)
            assert response.status_code == 400, bad
        unknown = self.call(sim, "PUT", "/teams/4242", "Preview", json={"admin_ids": members})
        assert unknown.status_code == 404
        for mode in ("api_plan_restricted", "forbidden"):
            sim_switch(sim, team_writes=mode)
            refused = self.call(sim, "PUT", path, "Preview", json={"admin_ids": members})
            assert refused.status_code == 403
            assert refused.json()["errors"][0]["code"] == mode
        sim_switch(sim, team_writes="enabled", conflicts=["declined", "partial"])
        before = list(sim.workspace.teams[team_id].admin_ids)
        declined = self.call(sim, "PUT", path, "Preview", json={"admin_ids": members})
        assert declined.status_code == 409
        assert "declined before anything was written" in declined.json()["errors"][0]["message"]
        assert sim.workspace.teams[team_id].admin_ids == before
        partial = self.call(sim, "PUT", path, "Preview", json={"admin_ids": members})
        assert partial.status_code == 409
        assert "Read the team and try again" in partial.json()["errors"][0]["message"]
        assert sorted(sim.workspace.teams[team_id].admin_ids) == sorted(map(str, members))
        done = self.call(sim, "PUT", path, "Preview", json={"admin_ids": [members[0]]})
        assert done.status_code == 200
        assert done.json()["admin_ids"] == [members[0]]
        assert team_id not in sim.workspace.admins[cast.victims[1]].team_ids

    def test_the_control_plane_refuses_unknown_switches(self, sim: SimulatorServer) -> None:
        for bad in ({"team_writes": "sometimes"}, {"conflicts": ["maybe"]}, {"typo": True}):
            response = httpx.put(f"{sim.url}/_sim/provisioning", json=bad)
            assert response.status_code == 400, bad
        assert httpx.get(f"{sim.url}/_sim/provisioning").json()["team_writes"] == "enabled"


def test_a_request_whose_process_died_is_closed_and_keeps_its_key(store: Database) -> None:
    """A record left unfinished (the process died mid-request) must not hold its key as "in
    progress" forever: after ABANDON_AFTER it is closed as failed, and a retry with the key is
    answered that, not sent again (the write may have reached Intercom)."""

    def start() -> records.Claim:
        return records.start_request(
            store,
            action="remove_user",
            user_id="991267403",
            team_id=None,
            dry_run=False,
            requested_by=fingerprint(PROVISIONING_TOKEN),
            request_hash="h1",
            idempotency_key="died-mid-request",
        )

    claim = start()
    assert claim.created
    again = start()
    assert not again.created
    assert not again.record.finished  # still in progress: 409 idempotency_key_in_use
    with store.writing() as session:
        session.execute(
            update(ProvisioningRequest)
            .where(ProvisioningRequest.id == claim.record.id)
            .values(requested_at=utcnow() - records.ABANDON_AFTER - timedelta(seconds=1))
        )
    later = start()
    assert not later.created
    assert later.record.finished
    assert later.record.result == "failed"
    assert later.record.error_code == "request_abandoned"
    assert later.record.http_status == 500


def test_each_write_sends_the_version_its_endpoint_needs_whatever_the_reads_use(
    sim: SimulatorServer, start_service: Callable[..., ServiceServer], cast: Cast
) -> None:
    service = start_service(
        intercom_api_version="2.16",
        provisioning_api_tokens=PROVISIONING_TOKEN,
        removal_reassign_admin_id=cast.target,
    )
    user_id = cast.victims[0]
    team_id = team_without(sim, user_id)
    sim.clear_requests()
    with service.client(PROVISIONING_TOKEN) as writer:
        assert writer.put(f"/api/v1/teams/{team_id}/members/{user_id}").status_code == 200
        assert writer.delete(f"/api/v1/users/{user_id}").status_code == 200
    versions = {(r.method, r.path): r.headers["intercom-version"] for r in sim.requests()}
    assert versions[("GET", f"/teams/{team_id}")] == "2.16"
    assert versions[("PUT", f"/teams/{team_id}")] == "Preview"
    assert versions[("DELETE", "/admins/remove")] == "2.17"
