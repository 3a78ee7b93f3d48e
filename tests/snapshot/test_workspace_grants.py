"""The workspace as a resource (issue 19.1): resource type `workspace`, the snapshot's
`workspaces`, entitlement `workspace:{id}:member` and a grant per active teammate, in the
snapshot, the grant pages and the change feed, where a teammate's grant changes in the same
version as the teammate joining or leaving, by webhook or baseline alike."""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, select

from app.intercom.models import IntercomAdmin, IntercomTeam, IntercomWorkspace
from app.intercom.notifications import parse_notification
from app.simulator import (
    SimAdmin,
    SimulatorServer,
    build_notification,
    encode_notification,
)
from app.store.engine import Database, create_database
from app.store.migrate import upgrade_to_head
from app.store.models import User, utcnow
from app.store.versioning import ChangeSet, changes_since, lock_store_state, record_changes
from app.store.workset import TeammateWorkset
from app.sync.baseline import FetchedWorkspace, apply_baseline
from app.webhooks.apply_notification import apply_notification
from harness.databases import database_server
from harness.service import OPERATOR_TOKEN, ServiceServer, snapshot
from harness.waiting import wait_for
from harness.workload import deliver_admin_event

StartService = Callable[..., ServiceServer]


def member_grant(workspace_id: str, user_id: str) -> str:
    return f"workspace:{workspace_id}:member:user:{user_id}"


def settled(service: ServiceServer, notification_id: str) -> str:
    """Wait until the inbox event has been processed; its outcome."""
    with service.client(OPERATOR_TOKEN) as client:

        def outcome() -> str | None:
            items = client.get("/webhook-events", params={"limit": 1000}).json()["items"]
            found = next((e["outcome"] for e in items if e["id"] == notification_id), None)
            return None if found in (None, "pending") else str(found)

        return wait_for(outcome, timeout=30, what="the notification to be processed")


def resync(service: ServiceServer) -> None:
    with service.client(OPERATOR_TOKEN) as client:
        run = client.post("/resync").json()

        def finished() -> dict[str, Any] | None:
            current: dict[str, Any] = client.get(f"/sync-runs/{run['id']}").json()
            return current if current["status"] not in ("queued", "running") else None

        done = wait_for(finished, timeout=30, what="the resync to finish")
    assert done["status"] == "succeeded", done


def changes(client: httpx.Client, since: int) -> list[tuple[int, str, str, str]]:
    response = client.get("/api/v1/changes", params={"since": since, "limit": 10000})
    assert response.status_code == 200, response.text
    return [
        (c["version"], c["resource_type"], c["resource_id"], c["op"])
        for c in response.json()["changes"]
    ]


def all_items(client: httpx.Client, path: str, limit: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        response = client.get(path, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= limit
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def replayed_grants(client: httpx.Client, since: int = 0) -> set[str]:
    """The grants a poller that applied the whole feed from `since` holds."""
    held: set[str] = set()
    for _, kind, rid, op in changes(client, since):
        if kind == "grant":
            (held.add if op == "upsert" else held.discard)(rid)
    return held


# -- the snapshot, the pages, the routes -------------------------------------------------------


def test_the_snapshot_has_the_workspace_its_member_entitlement_and_a_grant_per_teammate(
    service: ServiceServer, sim: SimulatorServer
) -> None:
    ws = sim.workspace
    removed = sorted(ws.admins.values(), key=lambda a: a.id)[4]
    settled(service, deliver_admin_event(service.url, sim, "admin.removed_from_workspace", removed))
    with service.client() as client:
        body = snapshot(client)
        everyone = snapshot(client, include_removed="true")

    assert body["resource_types"][-1] == {
        "id": "workspace",
        "display_name": "Workspace",
        "traits": [],
    }
    assert body["workspaces"] == [
        {"id": ws.id_code, "display_name": ws.name, "profile": {"region": ws.region}}
    ]
    assert body["entitlements"][-1] == {
        "id": f"workspace:{ws.id_code}:member",
        "resource_type": "workspace",
        "resource_id": ws.id_code,
        "slug": "member",
        "display_name": f"{ws.name} Workspace Member",
        "purpose": "assignment",
        "grantable_to": ["user"],
    }
    active = sorted(a.id for a in ws.admins.values() if a.id != removed.id)
    workspace_grants = [g for g in body["grants"] if g["id"].startswith("workspace:")]
    # One per active teammate, after the team grants, in user id order.
    assert workspace_grants == [
        {
            "id": member_grant(ws.id_code, uid),
            "entitlement_id": f"workspace:{ws.id_code}:member",
            "principal": {"resource_type": "user", "resource_id": uid},
        }
        for uid in active
    ]
    assert body["grants"][-len(active) :] == workspace_grants
    # A removed teammate is listed with include_removed, but holds no grant there either.
    assert removed.id in {u["id"] for u in everyone["users"]}
    assert everyone["grants"] == body["grants"]
    assert everyone["workspaces"] == body["workspaces"]


@pytest.mark.parametrize("api_version", ["2.14", "2.16"])
def test_the_grant_pages_list_the_snapshots_grants_workspace_grants_last(
    start_service: StartService, api_version: str
) -> None:
    service = start_service(intercom_api_version=api_version)
    with service.client() as client:
        body = snapshot(client)
        for limit in (1, 7, 1000):
            paged = all_items(client, "/api/v1/grants", limit)
            assert paged == body["grants"], limit
    kinds = [g["id"].split(":")[0] for g in body["grants"]]
    expected = ["team", "role", "workspace"] if api_version == "2.16" else ["team", "workspace"]
    assert list(dict.fromkeys(kinds)) == expected


def test_the_workspace_routes_list_it_and_its_members(
    service: ServiceServer, sim: SimulatorServer
) -> None:
    ws = sim.workspace
    with service.client() as client:
        body = snapshot(client)
        listing = client.get("/api/v1/workspaces").json()
        assert listing == {"items": body["workspaces"], "next_cursor": None, "version": 1}
        assert all_items(client, "/api/v1/workspaces", 1) == body["workspaces"]
        single = client.get(f"/api/v1/workspaces/{ws.id_code}")
        assert single.status_code == 200
        assert single.json() == body["workspaces"][0]
        members = all_items(client, f"/api/v1/workspaces/{ws.id_code}/members", 4)
        assert [m["user_id"] for m in members] == sorted(u["id"] for u in body["users"])
        for path in ("/api/v1/workspaces/nope", "/api/v1/workspaces/nope/members"):
            missing = client.get(path)
            assert missing.status_code == 404, path
            assert missing.json()["error"]["code"] == "not_found"
        tampered = client.get(f"/api/v1/workspaces/{ws.id_code}/members?cursor=abc")
        assert tampered.status_code == 400
        assert tampered.json()["error"]["code"] == "invalid_cursor"
        with service.client(OPERATOR_TOKEN) as operator:
            assert operator.get("/api/v1/workspaces").status_code == 401


# -- the change feed ---------------------------------------------------------------------------


def test_a_webhook_logs_the_grant_in_the_version_of_the_teammate_joining_or_leaving(
    service: ServiceServer, sim: SimulatorServer
) -> None:
    ws_id = sim.workspace.id_code
    team = sorted(sim.workspace.teams)[0]
    newcomer = SimAdmin(id="881001", name="New", email="new@acme.example", team_ids=[team])
    with service.client() as client:
        start = snapshot(client)["version"]
        settled(
            service, deliver_admin_event(service.url, sim, "admin.added_to_workspace", newcomer)
        )
        settled(service, deliver_admin_event(service.url, sim, "admin.logged_in", newcomer))
        away = newcomer.copy()
        away.away_mode_enabled = True
        settled(service, deliver_admin_event(service.url, sim, "admin.away_mode_updated", away))
        settled(
            service, deliver_admin_event(service.url, sim, "admin.removed_from_workspace", newcomer)
        )
        log = changes(client, start)
        final = snapshot(client)

    mine = [c for c in log if c[2] in (newcomer.id, member_grant(ws_id, newcomer.id))]
    versions = sorted({c[0] for c in mine})
    assert len(versions) == 4, log
    added, signed_in, went_away, removed = versions
    # Joining: the teammate and the grant in one version; signing in and away mode change the
    # teammate only; leaving: both again, in one version.
    assert [c[1:] for c in mine if c[0] == added] == [
        ("grant", member_grant(ws_id, newcomer.id), "upsert"),
        ("user", newcomer.id, "upsert"),
    ]
    assert [c[1:] for c in mine if c[0] in (signed_in, went_away)] == [
        ("user", newcomer.id, "upsert"),
        ("user", newcomer.id, "upsert"),
    ]
    assert [c[1:] for c in mine if c[0] == removed] == [
        ("grant", member_grant(ws_id, newcomer.id), "delete"),
        ("user", newcomer.id, "delete"),
    ]
    assert member_grant(ws_id, newcomer.id) not in {g["id"] for g in final["grants"]}


def test_a_baseline_logs_the_grant_of_every_teammate_it_adds_removes_or_brings_back(
    service: ServiceServer, sim: SimulatorServer
) -> None:
    ws = sim.workspace
    ws_id = ws.id_code
    admins = sorted(ws.admins.values(), key=lambda a: a.id)
    gone, back = admins[3], admins[5]
    newcomer = SimAdmin(id="882001", name="Newer", email="newer@acme.example")
    with service.client() as client:
        # `back` leaves by webhook first, so the baseline brings back a tombstone.
        settled(
            service, deliver_admin_event(service.url, sim, "admin.removed_from_workspace", back)
        )
        start = snapshot(client)["version"]
        ws.upsert_admin(newcomer)
        ws.remove_admin(gone.id)
        renamed = admins[7].copy()
        renamed.name = "Renamed Teammate"
        ws.upsert_admin(renamed)
        resync(service)
        log = changes(client, start)
        body = snapshot(client)

    assert {c[0] for c in log} == {start + 1}, "one baseline, one version"
    entries = {c[1:] for c in log}
    assert {
        ("user", newcomer.id, "upsert"),
        ("grant", member_grant(ws_id, newcomer.id), "upsert"),
        ("user", gone.id, "delete"),
        ("grant", member_grant(ws_id, gone.id), "delete"),
        ("user", back.id, "upsert"),
        ("grant", member_grant(ws_id, back.id), "upsert"),
        ("user", renamed.id, "upsert"),
    } <= entries
    # A teammate who only changed keeps their grant, so it is not logged again.
    workspace_grants = {c[2] for c in log if c[2].startswith("workspace:")}
    assert workspace_grants == {member_grant(ws_id, uid) for uid in (newcomer.id, gone.id, back.id)}
    served = {g["id"] for g in body["grants"] if g["id"].startswith("workspace:")}
    assert served == {member_grant(ws_id, u["id"]) for u in body["users"]}


def test_the_first_baseline_logs_the_workspace_and_every_teammates_grant(
    service: ServiceServer, sim: SimulatorServer
) -> None:
    ws_id = sim.workspace.id_code
    with service.client() as client:
        body = snapshot(client)
        log = changes(client, 0)
        replayed = replayed_grants(client)
    assert body["version"] == 1
    assert ("workspace", ws_id, "upsert") in {c[1:] for c in log if c[0] == 1}
    assert replayed == {g["id"] for g in body["grants"]}


def test_teammates_a_webhook_added_before_the_first_baseline_get_their_grant_in_it(
    start_service: StartService, sim: SimulatorServer
) -> None:
    """With INTERCOM_WORKSPACE_ID set, webhooks apply before any baseline has named the
    workspace; the teammates they add hold the grant once the baseline does, and a poller
    replaying the whole feed has it."""
    ws = sim.workspace
    team = sorted(ws.teams)[0]
    early = SimAdmin(id="883001", name="Early", email="early@acme.example", team_ids=[team])
    ws.upsert_admin(early)
    service = start_service(
        wait_ready=False, sync_on_startup=False, intercom_workspace_id=ws.id_code
    )
    assert (
        settled(service, deliver_admin_event(service.url, sim, "admin.added_to_workspace", early))
        == "applied"
    )
    resync(service)
    with service.client() as client:
        body = snapshot(client)
        assert member_grant(ws.id_code, early.id) in {g["id"] for g in body["grants"]}
        assert replayed_grants(client) == {g["id"] for g in body["grants"]}


def test_a_renamed_workspace_is_a_new_version_with_a_workspace_upsert_only(
    service: ServiceServer, sim: SimulatorServer
) -> None:
    ws = sim.workspace
    with service.client() as client:
        before = client.get("/api/v1/snapshot")
        with ws.lock:
            ws.name = "Acme Worldwide"
        resync(service)
        after = client.get("/api/v1/snapshot", headers={"If-None-Match": before.headers["ETag"]})
        assert after.status_code == 200, "the rename must not be served under the old ETag"
        body = after.json()
        assert body["version"] == before.json()["version"] + 1
        assert changes(client, before.json()["version"]) == [
            (body["version"], "workspace", ws.id_code, "upsert")
        ]
        assert body["workspace"]["name"] == "Acme Worldwide"
        assert body["workspaces"][0]["display_name"] == "Acme Worldwide"
        assert body["entitlements"][-1]["display_name"] == "Acme Worldwide Workspace Member"
        assert client.get(f"/api/v1/workspaces/{ws.id_code}").json()["display_name"] == (
            "Acme Worldwide"
        )
        # Nothing new: the same version again.
        resync(service)
        assert snapshot(client)["version"] == body["version"]


# -- the one place that records it, as a property ----------------------------------------------

WORKSPACE = "prop0ws1"
POOL = ("601", "602", "603", "604")
TEAM_IDS = ("701", "702")
ADDED, REMOVED = "admin.added_to_workspace", "admin.removed_from_workspace"
AWAY, LOGGED_IN = "admin.away_mode_updated", "admin.logged_in"
_counter = itertools.count()


def _admin(user_id: str, name: str, teams: list[str]) -> IntercomAdmin:
    return IntercomAdmin(id=user_id, name=name, email=f"{user_id}@acme.example", team_ids=teams)


def _fetched(members: list[str], name: str) -> FetchedWorkspace:
    return FetchedWorkspace(
        workspace=IntercomWorkspace(id_code=WORKSPACE, name="Prop", region="US"),
        admins=[_admin(uid, name, [TEAM_IDS[int(uid) % 2]]) for uid in members],
        teams=[IntercomTeam(id=t, name=f"Team {t}") for t in TEAM_IDS],
        fetch_started_at=utcnow(),
        roles_supported=False,
    )


@st.composite
def webhook_batches(draw: st.DrawFn) -> tuple[str, list[tuple[str, str, str]]]:
    """One transaction of webhook events: (topic, teammate, name) each."""
    events = draw(
        st.lists(
            st.tuples(
                st.sampled_from((ADDED, REMOVED, AWAY, LOGGED_IN)),
                st.sampled_from(POOL),
                st.sampled_from(("Ada", "Bo")),
            ),
            min_size=1,
            max_size=5,
        )
    )
    return "webhooks", events


@st.composite
def baselines(draw: st.DrawFn) -> tuple[str, list[str], str]:
    """One baseline run: the teammates Intercom lists, with a name for all of them."""
    members = draw(st.lists(st.sampled_from(POOL), unique=True))
    return "baseline", members, draw(st.sampled_from(("Ada", "Bo")))


def _no_fsync(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA synchronous=OFF")


@pytest.fixture(scope="module")
def template() -> Iterator[Path]:
    """A migrated, empty SQLite store to copy for each example."""
    folder = Path(tempfile.mkdtemp(prefix="workspace-grants-"))
    path = folder / "template.db"
    upgrade_to_head(f"sqlite:///{path}")
    try:
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _active(db: Database) -> set[str]:
    with db.reading() as session:
        return set(session.execute(select(User.id).where(User.removed_at.is_(None))).scalars())


def _apply_webhooks(db: Database, events: list[tuple[str, str, str]]) -> None:
    """One batch through one workset and one `record_changes`, as the applier does."""
    with db.writing() as session:
        state = lock_store_state(session)
        workset = TeammateWorkset(session)
        changes = ChangeSet()
        for topic, user_id, name in events:
            teams = [] if topic == REMOVED else [TEAM_IDS[int(user_id) % 2]]
            item = {
                "type": "admin",
                "id": user_id,
                "name": name,
                "email": f"{user_id}@acme.example",
                "away_mode_enabled": name == "Bo",
                "away_mode_reassign": False,
                "has_inbox_seat": True,
                "team_ids": teams,
            }
            envelope = build_notification(
                topic, item, app_id=WORKSPACE, created_at=1_760_000_000 + next(_counter)
            )
            outcome = apply_notification(
                workset,
                parse_notification(encode_notification(envelope)),
                version=state.version + 1,
                now=utcnow(),
                expected_app_id=WORKSPACE,
            )
            changes.merge(outcome.changes)
        workset.flush()
        record_changes(session, state, changes)


@pytest.mark.skipif(
    database_server() is not None,
    reason="runs on its own SQLite stores whatever the backend: the SQLite pass covers it",
)
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    steps=st.lists(st.one_of(webhook_batches(), baselines()), min_size=1, max_size=6),
    webhooks_first=st.booleans(),
)
def test_every_version_logs_exactly_the_grants_of_the_teammates_who_joined_or_left(
    template: Path, tmp_path_factory: pytest.TempPathFactory, steps: list[Any], webhooks_first: bool
) -> None:
    """Whatever mix of webhook batches and baselines runs (a webhook may even come before the
    first baseline names the workspace), each version logs a workspace grant upsert for every
    teammate who joined in it, a delete for every one who left, and no other; and replaying
    the log gives the active teammates."""
    path = tmp_path_factory.mktemp("store") / "store.db"
    shutil.copyfile(template, path)
    db = create_database(f"sqlite:///{path}")
    event.listen(db.engine, "connect", _no_fsync)
    try:
        if not webhooks_first:
            steps = [("baseline", list(POOL[:2]), "Ada"), *steps]
        named = False  # whether a baseline has named the workspace yet
        held: set[str] = set()
        for step in steps:
            before = _active(db)
            with db.reading() as session:
                version = lock_store_state(session).version
            if step[0] == "webhooks":
                _apply_webhooks(db, step[1])
            else:
                with db.writing() as session:
                    apply_baseline(session, _fetched(step[1], step[2]), force=True)
            after = _active(db)
            with db.reading() as session:
                logged = [
                    (r.resource_id, r.op)
                    for r in changes_since(session, since=version, limit=100_000)
                    if r.resource_type == "grant" and r.resource_id.startswith("workspace:")
                ]
            if not named and step[0] == "webhooks":
                assert logged == [], "no workspace id to name a grant by yet"
                continue
            expected = {(member_grant(WORKSPACE, uid), "upsert") for uid in after - before}
            expected |= {(member_grant(WORKSPACE, uid), "delete") for uid in before - after}
            if not named:
                # The baseline that first names the workspace grants every active teammate.
                expected |= {(member_grant(WORKSPACE, uid), "upsert") for uid in after}
                named = True
            assert sorted(logged) == sorted(expected)
            for grant_id, op in logged:
                (held.add if op == "upsert" else held.discard)(grant_id)
            assert held == {member_grant(WORKSPACE, uid) for uid in after}
    finally:
        db.dispose()
