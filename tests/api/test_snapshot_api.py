"""`GET /api/v1/snapshot`: the baton shape byte for byte, the not-synced answer,
conditional GET, gzip, and one serialized body per version."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from app.simulator import SimAdmin, SimTeam, SimulatorServer
from harness.service import OPERATOR_TOKEN, ServiceServer, served_truth, simulator_truth, snapshot
from harness.waiting import wait_for

StartService = Callable[..., ServiceServer]

SNAPSHOT_FIELDS = {
    "workspace",
    "version",
    "synced_at",
    "resource_types",
    "users",
    "teams",
    "workspaces",
    "entitlements",
    "grants",
}
USER_FIELDS = {
    "id",
    "display_name",
    "email",
    "login",
    "status",
    "account_type",
    "team_ids",
    "last_login_at",
    "profile",
}
PROFILE_FIELDS = {"job_title", "has_inbox_seat", "away_mode_enabled", "away_mode_reassign"}


def resync(service: ServiceServer) -> None:
    with service.client(OPERATOR_TOKEN) as ops:
        run_id = ops.post("/resync").json()["id"]

        def finished() -> dict[str, Any] | None:
            run: dict[str, Any] = ops.get(f"/sync-runs/{run_id}").json()
            return run if run["finished_at"] is not None else None

        run = wait_for(finished, timeout=30, what=f"sync run {run_id}")
    assert run["status"] == "succeeded", run


def get_raw(client: httpx.Client, encoding: str) -> tuple[httpx.Headers, bytes]:
    """Headers and the body exactly as sent (httpx would otherwise decompress it)."""
    headers = {"Accept-Encoding": encoding}
    with client.stream("GET", "/api/v1/snapshot", headers=headers) as response:
        assert response.status_code == 200
        return response.headers, b"".join(response.iter_raw())


class TestShape:
    def test_the_snapshot_is_the_baton_shape_of_the_workspace(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        with service.client() as client:
            body = snapshot(client)

        assert set(body) == SNAPSHOT_FIELDS
        ws = sim.workspace
        assert body["workspace"] == {"id": ws.id_code, "name": ws.name, "region": ws.region}
        assert body["version"] == 1
        assert isinstance(body["synced_at"], str)
        assert body["synced_at"].endswith("Z")
        assert body["resource_types"] == [
            {"id": "user", "display_name": "User", "traits": ["user"]},
            {"id": "team", "display_name": "Team", "traits": ["group"]},
            {"id": "workspace", "display_name": "Workspace", "traits": []},
        ]
        assert body["workspaces"] == [
            {"id": ws.id_code, "display_name": ws.name, "profile": {"region": ws.region}}
        ]
        assert served_truth(body) == simulator_truth(sim)

        with ws.lock:
            admins = {a.id: a.copy() for a in ws.admins.values()}
            teams = {t.id: t.copy() for t in ws.teams.values()}
        for user in body["users"]:
            assert set(user) == USER_FIELDS
            admin = admins[user["id"]]
            assert user["display_name"] == admin.name
            assert user["email"] == user["login"] == admin.email
            assert user["status"] == "enabled"
            assert user["last_login_at"] is None
            assert user["profile"] == {
                "job_title": admin.job_title,
                "has_inbox_seat": admin.has_inbox_seat,
                "away_mode_enabled": admin.away_mode_enabled,
                "away_mode_reassign": admin.away_mode_reassign,
                # The method of the last sign-in (none read from the log here).
                "last_login_method": None,
            }
            is_bot = admin.email.startswith("operator+") and admin.email.endswith("@intercom.io")
            assert user["account_type"] == ("service" if is_bot else "human")
        assert sum(u["account_type"] == "service" for u in body["users"]) == 1

        for team in body["teams"]:
            assert set(team) == {"id", "display_name", "member_ids", "profile"}
            assert team["display_name"] == teams[team["id"]].name
            assert team["profile"] == {}

        assert body["entitlements"] == [
            {
                "id": f"team:{team['id']}:member",
                "resource_type": "team",
                "resource_id": team["id"],
                "slug": "member",
                "display_name": f"{team['display_name']} Team Member",
                "purpose": "assignment",
                "grantable_to": ["user"],
            }
            for team in body["teams"]
        ] + [
            {
                "id": f"workspace:{ws.id_code}:member",
                "resource_type": "workspace",
                "resource_id": ws.id_code,
                "slug": "member",
                "display_name": f"{ws.name} Workspace Member",
                "purpose": "assignment",
                "grantable_to": ["user"],
            }
        ]
        expected_grants = {
            f"team:{team['id']}:member:user:{uid}": {
                "id": f"team:{team['id']}:member:user:{uid}",
                "entitlement_id": f"team:{team['id']}:member",
                "principal": {"resource_type": "user", "resource_id": uid},
            }
            for team in body["teams"]
            for uid in team["member_ids"]
        }
        # Every active teammate is a member of the workspace.
        expected_grants |= {
            f"workspace:{ws.id_code}:member:user:{uid}": {
                "id": f"workspace:{ws.id_code}:member:user:{uid}",
                "entitlement_id": f"workspace:{ws.id_code}:member",
                "principal": {"resource_type": "user", "resource_id": uid},
            }
            for uid in admins
        }
        assert len(body["grants"]) == len(expected_grants)
        assert {g["id"]: g for g in body["grants"]} == expected_grants

    def test_ids_are_strings_and_every_reference_resolves(self, service: ServiceServer) -> None:
        with service.client() as client:
            body = snapshot(client)
        user_ids = {u["id"] for u in body["users"]}
        team_ids = {t["id"] for t in body["teams"]}
        entitlement_ids = {e["id"] for e in body["entitlements"]}
        for user in body["users"]:
            assert isinstance(user["id"], str)
            assert all(isinstance(t, str) and t in team_ids for t in user["team_ids"])
        for team in body["teams"]:
            assert isinstance(team["id"], str)
            assert all(isinstance(m, str) and m in user_ids for m in team["member_ids"])
        for grant in body["grants"]:
            assert grant["entitlement_id"] in entitlement_ids
            assert grant["principal"]["resource_id"] in user_ids

    def test_display_name_falls_back_to_the_email(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        with sim.workspace.lock:
            admin = next(iter(sim.workspace.admins.values())).copy()
        sim.workspace.upsert_admin(SimAdmin.from_dict({"id": admin.id, "name": ""}, base=admin))
        resync(service)
        with service.client() as client:
            user = next(u for u in snapshot(client)["users"] if u["id"] == admin.id)
            single = client.get(f"/api/v1/users/{admin.id}").json()
        assert user["display_name"] == admin.email
        assert single == user


class TestNotSynced:
    def test_503_not_synced_with_retry_after_before_the_first_baseline(
        self, start_service: StartService
    ) -> None:
        service = start_service(wait_ready=False, sync_on_startup=False)
        with service.client() as client:
            for path in ("/api/v1/snapshot", "/api/v1/users", "/api/v1/changes?since=0"):
                response = client.get(path)
                assert response.status_code == 503, path
                assert response.json()["error"]["code"] == "not_synced"
                assert int(response.headers["Retry-After"]) > 0


class TestConditionalAndEncoding:
    def test_if_none_match_gives_304_with_an_empty_body_until_the_version_changes(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        with service.client() as client:
            etag = client.get("/api/v1/snapshot").headers["ETag"]
            again = client.get("/api/v1/snapshot", headers={"If-None-Match": etag})
            other = client.get("/api/v1/snapshot", headers={"If-None-Match": '"v999"'})
            assert again.status_code == 304
            assert again.content == b""
            assert again.headers["ETag"] == etag
            assert other.status_code == 200

            with sim.workspace.lock:
                team = next(iter(sim.workspace.teams.values())).copy()
            sim.workspace.upsert_team(SimTeam(id=team.id, name="Renamed", admin_ids=team.admin_ids))
            resync(service)
            after = client.get("/api/v1/snapshot", headers={"If-None-Match": etag})
            assert after.status_code == 200
            assert after.headers["ETag"] != etag
            assert after.json()["version"] == 2
            new_etag = after.headers["ETag"]
            assert (
                client.get("/api/v1/snapshot", headers={"If-None-Match": new_etag}).status_code
                == 304
            )

    def test_gzip_when_accepted_and_the_same_bytes_for_every_request_of_a_version(
        self, service: ServiceServer
    ) -> None:
        with service.client() as client:
            plain = [get_raw(client, "identity") for _ in range(3)]
            zipped = [get_raw(client, "gzip") for _ in range(3)]
        assert all("Content-Encoding" not in headers for headers, _ in plain)
        assert all(headers["Content-Encoding"] == "gzip" for headers, _ in zipped)
        # Serialized (and compressed) once per version: every request gets the same bytes.
        assert len({body for _, body in plain}) == 1
        assert len({body for _, body in zipped}) == 1
        plain_body, zipped_body = plain[0][1], zipped[0][1]
        assert gzip.decompress(zipped_body) == plain_body
        assert len(zipped_body) < len(plain_body)
        assert orjson.loads(plain_body)["version"] == 1
        assert len({headers["ETag"] for headers, _ in plain + zipped}) == 1
