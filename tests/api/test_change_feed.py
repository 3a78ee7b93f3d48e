"""The change feed `GET /api/v1/changes`: ordered and gap-free, whole versions per
page, 410 past the retained log, and enough for a poller to rebuild the current snapshot from an
old one."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from app.settings import load_settings
from app.simulator import SimulatorServer
from app.simulator.records import SimAdmin, SimTeam
from app.store.models import ChangeLogEntry, utcnow
from app.webhooks.inbox_drainer import prune_old_records
from harness.service import OPERATOR_TOKEN, ServiceServer, snapshot
from harness.waiting import wait_for
from harness.workload import deliver_admin_event

TEAM_GRANT = re.compile(r"^team:(?P<resource>.+):member:user:(?P<user>.+)$")
ROLE_GRANT = re.compile(r"^role:(?P<resource>.+):assigned:user:(?P<user>.+)$")
WORKSPACE_GRANT = re.compile(r"^workspace:(?P<resource>.+):member:user:(?P<user>.+)$")


def resync(service: ServiceServer) -> dict[str, Any]:
    with service.client(OPERATOR_TOKEN) as client:
        run = client.post("/resync").json()

        def finished() -> dict[str, Any] | None:
            current: dict[str, Any] = client.get(f"/sync-runs/{run['id']}").json()
            return current if current["status"] not in ("queued", "running") else None

        done = wait_for(finished, timeout=30, what="the resync to finish")
    assert done["status"] == "succeeded", done
    return done


def feed(client: httpx.Client, since: int, limit: int | None = None) -> dict[str, Any]:
    params = {"since": since} if limit is None else {"since": since, "limit": limit}
    response = client.get("/api/v1/changes", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_until(client: httpx.Client, check: Callable[[dict[str, Any]], bool], what: str) -> None:
    wait_for(lambda: check(snapshot(client)), timeout=20, what=what)


class Poller:
    """A connector that holds a snapshot and keeps it current from the change feed alone."""

    def __init__(self, client: httpx.Client, body: dict[str, Any]) -> None:
        self.client = client
        self.version: int = body["version"]
        self.users = {u["id"]: u for u in body["users"]}
        self.teams = {t["id"]: t for t in body["teams"]}
        self.roles = {r["id"]: r for r in body.get("roles", [])}
        self.workspaces = {w["id"]: w for w in body["workspaces"]}
        self.grants = {g["id"] for g in body["grants"]}
        self.pages = 0

    def _fetch(self, path: str) -> dict[str, Any] | None:
        response = self.client.get(path)
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    def poll(self, *, limit: int) -> None:
        while True:
            page = feed(self.client, self.version, limit)
            self.pages += 1
            if not page["changes"]:
                assert page["next_since"] == self.version == page["version"]
                return
            versions = [c["version"] for c in page["changes"]]
            assert versions == sorted(versions)
            assert versions[0] > self.version
            assert page["next_since"] == versions[-1]
            for change in page["changes"]:
                self._apply(change)
            self.version = page["next_since"]

    def _apply(self, change: dict[str, Any]) -> None:
        kind, rid, op = change["resource_type"], change["resource_id"], change["op"]
        assert op in ("upsert", "delete")
        if kind == "grant":
            assert TEAM_GRANT.match(rid) or ROLE_GRANT.match(rid) or WORKSPACE_GRANT.match(rid)
            if op == "upsert":
                self.grants.add(rid)
            else:
                self.grants.discard(rid)
            return
        store = {
            "user": self.users,
            "team": self.teams,
            "role": self.roles,
            "workspace": self.workspaces,
        }[kind]
        if op == "delete":
            store.pop(rid, None)
            return
        found = self._fetch(f"/api/v1/{kind}s/{rid}")
        # Read later than the change: it may be gone (or removed) again by now.
        if found is None or found.get("status") == "deleted":
            store.pop(rid, None)
        else:
            store[rid] = found

    def state(self) -> dict[str, Any]:
        """The snapshot this poller holds, relations rebuilt from its grants."""
        holders: dict[tuple[str, str], list[str]] = {}
        for grant_id in self.grants:
            if WORKSPACE_GRANT.match(grant_id):
                continue  # no relation of a user's or team's to rebuild from it
            match = TEAM_GRANT.match(grant_id) or ROLE_GRANT.match(grant_id)
            assert match is not None
            kind = "team" if grant_id.startswith("team:") else "role"
            holders.setdefault((kind, match["resource"]), []).append(match["user"])
        users = []
        for user in self.users.values():
            user = dict(user)
            user["team_ids"] = [
                t for (k, t), m in holders.items() if k == "team" and user["id"] in m
            ]
            if "role_ids" in user:
                user["role_ids"] = [
                    r for (k, r), m in holders.items() if k == "role" and user["id"] in m
                ]
            users.append(user)
        teams = [
            {**team, "member_ids": holders.get(("team", team["id"]), [])}
            for team in self.teams.values()
        ]
        roles = [
            {**role, "member_ids": holders.get(("role", role["id"]), [])}
            for role in self.roles.values()
        ]
        return normalized(
            {
                "version": self.version,
                "users": users,
                "teams": teams,
                "roles": roles,
                "workspaces": list(self.workspaces.values()),
                "grants": sorted(self.grants),
            }
        )


def normalized(body: dict[str, Any]) -> dict[str, Any]:
    """Order-free form: lists of ids sorted, objects keyed by id."""

    def tidy(obj: dict[str, Any]) -> dict[str, Any]:
        return {
            k: sorted(v) if k in ("team_ids", "role_ids", "member_ids") else v
            for k, v in obj.items()
        }

    grants = body["grants"]
    return {
        "version": body["version"],
        "users": {u["id"]: tidy(u) for u in body["users"]},
        "teams": {t["id"]: tidy(t) for t in body["teams"]},
        "roles": {r["id"]: tidy(r) for r in body.get("roles", [])},
        "workspaces": {w["id"]: w for w in body["workspaces"]},
        "grants": sorted(g if isinstance(g, str) else g["id"] for g in grants),
    }


def test_since_now_gives_no_changes_bad_input_is_400_and_a_future_since_is_410(
    service: ServiceServer,
) -> None:
    with service.client() as client:
        version = snapshot(client)["version"]
        assert feed(client, version) == {"changes": [], "next_since": version, "version": version}
        for params in ({}, {"since": -1}, {"since": "x"}, {"since": 0, "limit": 0}):
            response = client.get("/api/v1/changes", params=params)
            assert response.status_code == 400, params
            assert set(response.json()["error"]) == {"code", "message"}
        ahead = client.get("/api/v1/changes", params={"since": version + 5})
        assert ahead.status_code == 410
        assert ahead.json()["error"]["code"] == "since_ahead_of_store"


def test_the_feed_is_ordered_gap_free_and_never_splits_a_version(
    service: ServiceServer, sim: SimulatorServer
) -> None:
    admins = sorted(sim.workspace.admins.values(), key=lambda a: a.id)
    with service.client() as client:
        for admin in admins[:4]:
            deliver_admin_event(service.url, sim, "admin.removed_from_workspace", admin)
        wait_until(
            client,
            lambda body: not {a.id for a in admins[:4]} & {u["id"] for u in body["users"]},
            "the removals to be applied",
        )
        sim.workspace.add_member(sorted(sim.workspace.teams)[0], admins[10].id)
        sim.workspace.upsert_team(
            SimTeam(id="700001", name="Night shift", admin_ids=[admins[11].id])
        )
        resync(service)
        current = snapshot(client)["version"]
        assert current >= 3

        for limit in (1, 2, 1000):
            seen: list[int] = []
            since, pages = 0, 0
            while True:
                page = feed(client, since, limit)
                assert page["version"] == current
                if not page["changes"]:
                    break
                pages += 1
                versions = [c["version"] for c in page["changes"]]
                assert versions == sorted(versions)
                # Whole versions only: a page may exceed `limit` rather than split one.
                assert versions[0] > since
                assert page["next_since"] == versions[-1]
                assert not set(versions) & set(seen), "a version was split across pages"
                seen.extend(versions)
                since = page["next_since"]
            assert sorted(set(seen)) == list(range(1, current + 1))
            if limit == 1:
                assert pages == current
        changes = feed(client, 0, 10000)["changes"]
    # The baseline's changes are all at version 1, every resource type present.
    first = [c for c in changes if c["version"] == 1]
    assert {c["resource_type"] for c in first} == {"user", "team", "workspace", "grant"}
    assert all(c["op"] == "upsert" for c in first)
    deletes = {(c["resource_type"], c["resource_id"]) for c in changes if c["op"] == "delete"}
    assert {("user", a.id) for a in admins[:4]} <= deletes
    assert ("grant", f"team:700001:member:user:{admins[11].id}") in {
        (c["resource_type"], c["resource_id"]) for c in changes if c["op"] == "upsert"
    }


def test_a_since_older_than_the_retained_log_is_410_since_too_old(
    service: ServiceServer, sim: SimulatorServer
) -> None:
    services = service.app.state.services
    admins = sorted(sim.workspace.admins.values(), key=lambda a: a.id)
    with service.client() as client:
        for n, admin in enumerate(admins[:3], start=1):
            deliver_admin_event(service.url, sim, "admin.removed_from_workspace", admin)

            def applied(body: dict[str, Any], n: int = n) -> bool:
                return bool(body["version"] == 1 + n)

            wait_until(client, applied, "the removal to be applied")
        # Versions 1 and 2 fall out of the default 30-day retention.
        with services.db.writing() as session:
            session.execute(
                update(ChangeLogEntry)
                .where(ChangeLogEntry.version <= 2)
                .values(at=utcnow() - timedelta(days=31))
            )
        prune_old_records(services.db, services.settings)
        for since in (0, 1):
            response = client.get("/api/v1/changes", params={"since": since})
            assert response.status_code == 410
            assert response.json()["error"]["code"] == "since_too_old"
        kept = feed(client, 2)
        assert sorted({c["version"] for c in kept["changes"]}) == [3, 4]

        # A retention shorter than the age of everything drops the whole log; only a poller
        # that is fully caught up can carry on.
        time.sleep(0.05)
        prune_old_records(
            services.db, services.settings.model_copy(update={"change_log_retention_days": 1e-7})
        )
        assert client.get("/api/v1/changes", params={"since": 3}).status_code == 410
        assert feed(client, 4) == {"changes": [], "next_since": 4, "version": 4}


def test_retention_is_configured_by_change_log_retention_days(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings(_env_file=None).change_log_retention_days == 30
    monkeypatch.setenv("CHANGE_LOG_RETENTION_DAYS", "2.5")
    assert load_settings(_env_file=None).change_log_retention_days == 2.5


def test_a_poller_applying_the_feed_to_an_old_snapshot_reaches_the_current_snapshot(
    start_service: Callable[..., ServiceServer], sim: SimulatorServer
) -> None:
    service = start_service(intercom_api_version="2.16")
    ws = sim.workspace
    admins = sorted(ws.admins.values(), key=lambda a: a.id)
    teams = sorted(ws.teams)
    with service.client() as client:
        old = snapshot(client)
        poller = Poller(client, old)
        late_poller = Poller(client, old)

        # Webhooks: a newcomer, a removal, an away-mode change.
        newcomer = SimAdmin(
            id="880001", name="", email="newcomer@acme.example", team_ids=[teams[0], teams[1]]
        )
        deliver_admin_event(service.url, sim, "admin.added_to_workspace", newcomer)
        removed = next(a for a in admins[10:] if a.team_ids and a.role)
        deliver_admin_event(service.url, sim, "admin.removed_from_workspace", removed)
        away = admins[3].copy()
        away.away_mode_enabled = not away.away_mode_enabled
        ws.upsert_admin(away)
        deliver_admin_event(service.url, sim, "admin.away_mode_updated", away)
        wait_until(
            client,
            lambda b: (
                {"880001"} <= {u["id"] for u in b["users"]}
                and removed.id not in {u["id"] for u in b["users"]}
                and next(u for u in b["users"] if u["id"] == away.id)["profile"][
                    "away_mode_enabled"
                ]
                == away.away_mode_enabled
            ),
            "the webhooks to be applied",
        )
        poller.poll(limit=2)
        assert poller.state() == normalized(snapshot(client))

        # A sync: membership moves, a renamed, a new and a deleted team, a role change, a
        # teammate gone from Intercom (and the webhook newcomer, whom Intercom never had), a
        # renamed workspace.
        ws.remove_admin(removed.id)
        ws.add_member(teams[2], admins[5].id)
        ws.remove_member(ws.admins[admins[6].id].team_ids[0], admins[6].id)
        ws.upsert_team(
            SimTeam(id=teams[1], name="Renamed team", admin_ids=ws.teams[teams[1]].admin_ids)
        )
        ws.upsert_team(
            SimTeam(id="700002", name="Brand new", admin_ids=[admins[7].id, admins[8].id])
        )
        ws.remove_team(teams[4])
        ws.set_role(
            admins[0].id,
            ("3", "Viewer") if admins[0].role != ("3", "Viewer") else ("2", "Support Agent"),
        )
        ws.remove_admin(admins[9].id)
        with ws.lock:
            ws.name = "Acme, renamed"  # the workspace resource and its entitlement's name
        resync(service)
        # A webhook after the sync.
        back = admins[9].copy()
        back.team_ids = [teams[0]]
        ws.upsert_admin(back)
        deliver_admin_event(service.url, sim, "admin.added_to_workspace", back)
        wait_until(client, lambda b: back.id in {u["id"] for u in b["users"]}, "the re-add")

        current = snapshot(client)
        poller.poll(limit=3)
        late_poller.poll(limit=1)
        assert poller.state() == normalized(current)
        assert late_poller.state() == normalized(current)
    # The feed really was read a page at a time.
    assert late_poller.pages > current["version"] - old["version"]
    assert current["version"] > old["version"] + 4
