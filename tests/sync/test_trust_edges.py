"""Edges and trust, the store's side (issue 17.4–17.6): no value Intercom sends stops a
sync, no notification time from the far future becomes a watermark, and a baseline heals what
webhooks alone announced (ghosts) without the mass-removal brake counting them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select, text, update
from sqlalchemy.exc import StatementError

from app.simulator import SimulatorServer, admin_webhook_item, encode_notification
from app.store.engine import Database, create_database, describe_error
from app.store.models import User, WebhookEvent
from harness.service import (
    OPERATOR_TOKEN,
    ServiceServer,
    service_env,
    signed_headers,
    simulator_truth,
)
from harness.waiting import wait_for
from harness.workload import operator, resync
from tests.webhooks.test_webhook_apply import (
    deliver,
    events_by_id,
    existing_teammate,
    iso,
    notify,
    served,
    settle,
    user_in,
)

StartService = Callable[..., ServiceServer]
FAR_FUTURE = 253_402_300_799  # 9999-12-31T23:59:59Z, the latest time a notification may carry


def sim_post(sim: SimulatorServer, path: str, data: dict[str, Any]) -> dict[str, Any]:
    """A control-plane call with a JSON body as the standard library writes it: NUL and
    unpaired surrogates travel as `\\u` escapes, as they may in Intercom's own JSON."""
    response = httpx.post(f"{sim.url}{path}", content=json.dumps(data).encode(), timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def post(service: ServiceServer, envelope: dict[str, Any]) -> dict[str, Any]:
    body = encode_notification(envelope)
    response = httpx.post(
        f"{service.url}/webhooks/intercom", content=body, headers=signed_headers(body), timeout=10
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def runs(service: ServiceServer) -> list[dict[str, Any]]:
    with service.client(OPERATOR_TOKEN) as client:
        response = client.get("/sync-runs", params={"limit": 100})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def open_store(database_url: str) -> Database:
    return create_database(database_url, pool_size=1)


# ----- 17.4: no value stops a sync -----------------------------------------------------------


def test_control_characters_and_surrogates_are_cleaned_and_the_baseline_succeeds(
    start_service: StartService, sim: SimulatorServer
) -> None:
    """On PostgreSQL a NUL in one name failed every baseline; on both backends an unpaired
    surrogate escape made `/admins` unreadable. Both are cleaned identically on the way in."""
    admin = existing_teammate(sim)
    team_id = admin.team_ids[0]
    sim_post(
        sim,
        "/_sim/admins",
        {
            "id": admin.id,
            "name": "Ada\x00 Love\x1blace\ud800",
            "email": "ada\x00.lovelace@example.com",
            "job_title": "Eng\x07ineer\tlead\n\x7f\x85",
            "role": ["7", "Ad\x00min\udfff"],
        },
    )
    sim_post(sim, "/_sim/admins", {"id": "770000001", "name": "\ud83d\ude00 x", "email": "n@ex.io"})
    sim_post(sim, "/_sim/teams", {"id": team_id, "name": "Sup\x00port\udc00"})
    state = httpx.get(f"{sim.url}/_sim/state", timeout=10).json()
    response = httpx.put(
        f"{sim.url}/_sim/state",
        content=json.dumps({**state, "name": "Acme\x00 Support"}).encode(),
        timeout=10,
    )
    assert response.status_code == 200, response.text

    service = start_service(intercom_api_version="2.16")
    [run] = runs(service)
    assert (run["status"], run["error"], run["warnings"]) == ("succeeded", None, [])
    body = served(service)
    user = user_in(body, admin.id)
    assert user is not None
    assert user["display_name"] == "Ada Lovelace\ufffd"
    assert user["email"] == "ada.lovelace@example.com"
    assert user["profile"]["job_title"] == "Engineer\tlead\n"
    assert user["role_ids"] == ["7"]
    roles = {role["id"]: role["display_name"] for role in body["roles"]}
    assert roles["7"] == "Admin\ufffd"
    new = user_in(body, "770000001")
    assert new is not None
    assert new["display_name"] == "\U0001f600 x"
    teams = {team["id"]: team["display_name"] for team in body["teams"]}
    assert teams[team_id] == "Support\ufffd"
    assert body["workspace"]["name"] == "Acme Support"


def test_an_email_too_long_to_store_leaves_the_teammate_as_it_was_and_is_a_run_warning(
    service: ServiceServer, sim: SimulatorServer
) -> None:
    admin = existing_teammate(sim)
    before = user_in(served(service), admin.id)
    others = sorted(
        (a for a in sim.workspace.admins.values() if a.id != admin.id), key=lambda a: a.id
    )
    renamed, leaving = others[0], others[1]
    long_email = "a" * 600 + "@example.com"
    sim_post(sim, "/_sim/admins", {"id": admin.id, "email": long_email, "name": "Renamed"})
    sim_post(sim, "/_sim/admins", {"id": "770000002", "name": "Long", "email": "b" + long_email})
    sim_post(sim, "/_sim/admins", {"id": renamed.id, "name": "Still Applied"})
    sim.workspace.remove_admin(leaving.id)

    with operator(service.url) as op:
        run = resync(op)
        assert run["status"] == "succeeded", run
        assert op.get(f"/sync-runs/{run['id']}").json()["warnings"] == run["warnings"]
    warned = {(w["resource_type"], w["id"]) for w in run["warnings"]}
    assert warned == {("user", admin.id), ("user", "770000002")}
    assert all("612 characters" in w["reason"] or "613" in w["reason"] for w in run["warnings"])
    body = served(service)
    # Never clipped, never removed because of it: exactly as before, memberships and all.
    assert user_in(body, admin.id) == before
    assert user_in(body, "770000002") is None
    # The rest of the run applied.
    assert user_in(body, renamed.id)["display_name"] == "Still Applied"  # type: ignore[index]
    assert user_in(body, leaving.id) is None

    sim_post(sim, "/_sim/admins", {"id": admin.id, "email": "fixed@example.com"})
    with operator(service.url) as op:
        run = resync(op)
    assert run["status"] == "succeeded"
    assert [warning["id"] for warning in run["warnings"]] == ["770000002"]
    fixed = user_in(served(service), admin.id)
    assert fixed is not None
    assert (fixed["email"], fixed["display_name"]) == ("fixed@example.com", "Renamed")


def test_webhook_text_is_cleaned_and_an_overlong_email_never_stored_cut(
    service: ServiceServer, sim: SimulatorServer
) -> None:
    admin, other = sorted(
        (a for a in sim.workspace.admins.values() if not a.email.endswith("@intercom.io")),
        key=lambda a: a.id,
    )[:2]
    item = admin_webhook_item(admin)
    item.update(name="Grace\x00 Hopper\ud800", job_title="Rear\x0b Admiral")
    cleaned = deliver(service, notify(sim, "admin.added_to_workspace", item))
    long_item = {**admin_webhook_item(other), "name": "Changed", "email": "c" * 600 + "@ex.io"}
    overlong = deliver(service, notify(sim, "admin.added_to_workspace", long_item))
    outcomes = settle(service, cleaned, overlong)
    assert outcomes == {cleaned["id"]: "applied", overlong["id"]: "ignored"}
    assert "606 characters" in events_by_id(service)[overlong["id"]]["error"]
    body = served(service)
    user = user_in(body, admin.id)
    assert user is not None
    assert (user["display_name"], user["profile"]["job_title"]) == (
        "Grace Hopper\ufffd",
        "Rear Admiral",
    )
    assert user_in(body, other.id)["display_name"] == other.name  # type: ignore[index]

    # A removal still removes; the tombstone keeps the email it had rather than a cut one.
    removal = {**long_item, "team_ids": []}
    settle(service, deliver(service, notify(sim, "admin.removed_from_workspace", removal)))
    assert user_in(served(service), other.id) is None
    tombstone = user_in(served(service, include_removed=True), other.id)
    assert tombstone is not None
    assert (tombstone["status"], tombstone["email"]) == ("deleted", other.email)


def test_a_refused_statement_is_described_without_sql_or_bound_values(store: Database) -> None:
    secret_email = "someone.private@example.com"
    with store.writing() as session:
        session.execute(insert(User).values(id="1", email=secret_email))
    with pytest.raises(StatementError) as caught, store.writing() as session:
        session.execute(insert(User).values(id="1", email=secret_email))
    assert secret_email not in str(caught.value)  # hide_parameters, also in any traceback
    described = describe_error(caught.value)
    assert described.startswith("the store refused a statement (")
    assert secret_email not in described
    assert "INSERT" not in described.upper()


def _refuse_inserts_of(database_url: str, marker: str) -> None:
    """A trigger that makes the store itself refuse a teammate whose email has `marker`: a real
    write failure, as a NUL was on PostgreSQL."""
    db = open_store(database_url)
    try:
        with db.writing() as session:
            if db.is_sqlite:
                session.execute(
                    text(
                        'CREATE TRIGGER refuse_marker BEFORE INSERT ON "user" '
                        f"WHEN NEW.email LIKE '%{marker}%' "
                        "BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END"
                    )
                )
            else:
                session.execute(
                    text(
                        "CREATE FUNCTION refuse_marker() RETURNS trigger AS $$ BEGIN "
                        f"IF NEW.email LIKE '%{marker}%' THEN "
                        "RAISE EXCEPTION 'refused by a test trigger'; END IF; "
                        "RETURN NEW; END $$ LANGUAGE plpgsql"
                    )
                )
                session.execute(
                    text(
                        'CREATE TRIGGER refuse_marker BEFORE INSERT ON "user" '
                        "FOR EACH ROW EXECUTE FUNCTION refuse_marker()"
                    )
                )
    finally:
        db.dispose()


def test_a_failed_webhook_write_records_no_sql_and_no_values(
    service: ServiceServer,
    sim: SimulatorServer,
    database_url: str,
    capfd: pytest.CaptureFixture[str],
) -> None:
    _refuse_inserts_of(database_url, "refuse-me")
    email = "refuse-me.private@example.com"
    item = {**admin_webhook_item(existing_teammate(sim)), "id": 770000003, "email": email}
    envelope = deliver(service, notify(sim, "admin.added_to_workspace", item))

    def recorded_error() -> str | None:
        event = events_by_id(service)[envelope["id"]]
        error: str | None = event["error"]
        return error if event["attempts"] >= 1 and error else None

    error = wait_for(recorded_error, timeout=30, what="the failed attempt to be recorded")
    assert error.startswith("the store refused a statement"), error
    assert "refused by a test trigger" in error
    assert email not in error
    assert "INSERT" not in error.upper()
    logged = capfd.readouterr()
    assert email not in logged.out + logged.err


# ----- 17.5: no watermark in the future ------------------------------------------------------


def send_through_simulator(
    sim: SimulatorServer, service: ServiceServer, **request: Any
) -> dict[str, Any]:
    """`/_sim/webhooks/send`: the simulator signs and delivers a notification."""
    response = httpx.post(
        f"{sim.url}/_sim/webhooks/send",
        json={"url": f"{service.url}/webhooks/intercom", **request},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_a_sign_in_from_the_far_future_is_rejected_and_real_ones_still_count(
    service: ServiceServer, sim: SimulatorServer
) -> None:
    admin = existing_teammate(sim)
    sent = send_through_simulator(
        sim, service, topic="admin.logged_in", admin_id=admin.id, created_at=FAR_FUTURE
    )
    assert (sent["status"], json.loads(sent["body"])) == (200, {"status": "ignored"})
    event = events_by_id(service)[sent["notification"]["id"]]
    assert event["outcome"] == "rejected"
    assert "more than 5 minutes after" in event["error"], event
    assert user_in(served(service), admin.id)["last_login_at"] is None  # type: ignore[index]

    now = int(time.time())
    real = send_through_simulator(
        sim, service, topic="admin.logged_in", admin_id=admin.id, created_at=now
    )
    assert json.loads(real["body"]) == {"status": "accepted"}
    settle(service, real["notification"])
    assert user_in(served(service), admin.id)["last_login_at"] == iso(now)  # type: ignore[index]


def test_a_far_future_added_does_not_hide_a_genuine_removal(
    service: ServiceServer, sim: SimulatorServer
) -> None:
    admin = existing_teammate(sim)
    future = send_through_simulator(
        sim, service, topic="admin.added_to_workspace", admin_id=admin.id, created_at=FAR_FUTURE
    )
    assert json.loads(future["body"]) == {"status": "ignored"}
    sim.workspace.remove_admin(admin.id)
    item = {**admin_webhook_item(admin), "team_ids": []}
    removal = deliver(service, notify(sim, "admin.removed_from_workspace", item))
    assert settle(service, removal) == {removal["id"]: "applied"}
    assert user_in(served(service), admin.id) is None


def test_a_baseline_repairs_times_an_earlier_release_let_lie_in_the_future(
    service: ServiceServer, sim: SimulatorServer, database_url: str
) -> None:
    admin, gone = sorted(
        (a for a in sim.workspace.admins.values() if not a.email.endswith("@intercom.io")),
        key=lambda a: a.id,
    )[:2]
    far = datetime.fromtimestamp(FAR_FUTURE, UTC)
    sim.workspace.remove_admin(gone.id)
    with operator(service.url) as op:
        assert resync(op)["status"] == "succeeded"
    db = open_store(database_url)
    try:
        with db.writing() as session:
            # What an earlier release stored from `created_at=253402300799` notifications.
            session.execute(
                update(User)
                .where(User.id == admin.id)
                .values(
                    event_watermark=FAR_FUTURE,
                    away_watermark=FAR_FUTURE,
                    last_login_at=far,
                    last_logout_at=far,
                )
            )
            session.execute(update(User).where(User.id == gone.id).values(removed_at=far))
            # And one such notification it stored but had not applied yet.
            envelope = notify(
                sim, "admin.logged_in", admin_webhook_item(admin), created_at=FAR_FUTURE
            )
            session.execute(
                insert(WebhookEvent).values(
                    notification_id=envelope["id"],
                    topic="admin.logged_in",
                    app_id=sim.workspace.id_code,
                    item_id=admin.id,
                    notification_created_at=FAR_FUTURE,
                    received_at=datetime.now(UTC),
                    next_attempt_at=datetime.now(UTC),
                    status="pending",
                    raw_body=encode_notification(envelope),
                )
            )
    finally:
        db.dispose()

    assert settle(service, envelope) == {envelope["id"]: "rejected"}
    with operator(service.url) as op:
        assert resync(op)["status"] == "succeeded"
    db = open_store(database_url)
    try:
        with db.reading() as session:
            row = session.execute(select(User).where(User.id == admin.id)).scalar_one()
            assert (row.event_watermark, row.away_watermark) == (None, None)
            assert (row.last_login_at, row.last_logout_at) == (None, None)
            tombstone = session.execute(select(User).where(User.id == gone.id)).scalar_one()
            assert tombstone.removed_at is not None
            assert tombstone.removed_at < far
    finally:
        db.dispose()
    assert user_in(served(service), admin.id)["last_login_at"] is None  # type: ignore[index]

    # The teammate's notifications count again: a real sign-in, then a genuine removal.
    now = int(time.time())
    login = deliver(
        service, notify(sim, "admin.logged_in", admin_webhook_item(admin), created_at=now)
    )
    settle(service, login)
    assert user_in(served(service), admin.id)["last_login_at"] == iso(now)  # type: ignore[index]
    sim.workspace.remove_admin(admin.id)
    item = {**admin_webhook_item(admin), "team_ids": []}
    removal = deliver(service, notify(sim, "admin.removed_from_workspace", item))
    assert settle(service, removal) == {removal["id"]: "applied"}
    assert user_in(served(service), admin.id) is None


# ----- 17.6: ghosts --------------------------------------------------------------------------


def ghost_item(sim: SimulatorServer, number: int, team_id: str) -> dict[str, Any]:
    template = admin_webhook_item(existing_teammate(sim))
    return {
        **template,
        "id": 880_000_000 + number,
        "name": f"Ghost {number}",
        "email": f"ghost{number}@example.com",
        "team_ids": [int(team_id)],
    }


def test_ghosts_are_removed_by_the_next_baseline_without_tripping_the_brake(
    service: ServiceServer, sim: SimulatorServer, database_url: str
) -> None:
    team_id = sorted(sim.workspace.teams)[0]
    with service.client() as client:
        version = client.get("/api/v1/snapshot").json()["version"]
    # Twenty stale (or forged) "added" for teammates Intercom does not have, and a removal of
    # one it never had either (a tombstone that used to stay forever).
    added = [
        deliver(service, notify(sim, "admin.added_to_workspace", ghost_item(sim, n, team_id)))
        for n in range(20)
    ]
    removal = {**ghost_item(sim, 99, team_id), "team_ids": []}
    removed = deliver(service, notify(sim, "admin.removed_from_workspace", removal))
    settle(service, *added, removed)
    assert len(served(service)["users"]) == len(sim.workspace.admins) + 20
    leaving = existing_teammate(sim)
    sim.workspace.remove_admin(leaving.id)

    with operator(service.url) as op:
        run = resync(op)
    assert run["status"] == "succeeded", run  # was: blocked, "would remove 21 of 50"
    assert run["stats"]["users_removed"] == 21
    body = served(service)
    users, teams = simulator_truth(sim)
    assert {u["id"]: set(u["team_ids"]) for u in body["users"]} == users
    assert {t["id"]: set(t["member_ids"]) for t in body["teams"]} == teams
    # C1 may have read them in a snapshot: the change log says they are gone.
    with service.client() as client:
        changes = client.get("/api/v1/changes", params={"since": version, "limit": 1000}).json()
    deleted = {c["resource_id"] for c in changes["changes"] if c["op"] == "delete"}
    ghosts = {str(880_000_000 + n) for n in range(20)}
    assert ghosts <= deleted
    assert {f"team:{team_id}:member:user:{g}" for g in ghosts} <= deleted
    # For now their tombstones hold back a replay of the same "added" under a new id.
    replay = deliver(
        service,
        {**added[0], "id": "notif_replayed", "created_at": added[0]["created_at"]},
    )
    assert settle(service, replay) == {"notif_replayed": "ignored"}
    everyone = served(service, include_removed=True)["users"]
    assert {u["id"] for u in everyone if u["status"] == "deleted"} >= ghosts | {"880000099"}

    # No notification has touched them for longer than the inbox keeps deliveries: the next
    # baseline deletes the ghosts' tombstones outright, and says so in the change log.
    db = open_store(database_url)
    try:
        with db.writing() as session:
            session.execute(
                update(User)
                .where(User.id.in_([*ghosts, "880000099", leaving.id]))
                .values(event_applied_at=datetime.now(UTC) - timedelta(days=8))
            )
    finally:
        db.dispose()
    with service.client() as client:
        version = client.get("/api/v1/snapshot").json()["version"]
    with operator(service.url) as op:
        assert resync(op)["status"] == "succeeded"
    everyone_ids = {u["id"] for u in served(service, include_removed=True)["users"]}
    assert not (ghosts | {"880000099"}) & everyone_ids
    assert leaving.id in everyone_ids  # a teammate a baseline saw keeps their tombstone
    with service.client() as client:
        changes = client.get("/api/v1/changes", params={"since": version, "limit": 1000}).json()
    assert {c["resource_id"] for c in changes["changes"] if c["op"] == "delete"} == ghosts | {
        "880000099"
    }


def test_real_removals_still_meet_the_brake_and_ghosts_do_not_count_toward_it(
    start_service: StartService, sim: SimulatorServer
) -> None:
    service = start_service()
    team_id = sorted(sim.workspace.teams)[0]
    envelopes = [
        deliver(service, notify(sim, "admin.added_to_workspace", ghost_item(sim, n, team_id)))
        for n in range(20)
    ]
    settle(service, *envelopes)
    stored = len(sim.workspace.admins)
    humans = sorted(a.id for a in sim.workspace.admins.values())
    for admin_id in humans[:10]:
        sim.workspace.remove_admin(admin_id)
    with operator(service.url) as op:
        run = resync(op)
    assert run["status"] == "blocked", run
    assert f"would remove 10 of {stored} teammates" in run["error"]["message"]

    with operator(service.url) as op:
        assert resync(op, force=True)["status"] == "succeeded"
    # A teammate a webhook announced and a baseline then listed is no ghost any more.
    real = ghost_item(sim, 50, team_id)
    added = deliver(service, notify(sim, "admin.added_to_workspace", real))
    settle(service, added)
    sim_post(
        sim,
        "/_sim/admins",
        {"id": str(real["id"]), "name": real["name"], "email": real["email"]},
    )
    with operator(service.url) as op:
        assert resync(op)["status"] == "succeeded"
    sim.workspace.remove_admin(str(real["id"]))
    with operator(service.url) as op:
        assert resync(op)["status"] == "succeeded"
    tombstone = user_in(served(service, include_removed=True), str(real["id"]))
    assert tombstone is not None
    assert tombstone["status"] == "deleted"


def test_the_command_line_sync_prints_each_warning(
    database_url: str, sim: SimulatorServer, tmp_path: Path
) -> None:
    admin = existing_teammate(sim)
    sim_post(sim, "/_sim/admins", {"id": admin.id, "email": "d" * 520 + "@example.com"})
    result = subprocess.run(
        [str(Path(sys.executable).parent / "intercom-sync"), "sync"],
        env={**os.environ, **service_env(database_url, sim)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1].startswith("sync succeeded")
    [warning] = [line for line in lines if line.startswith("warning:")]
    assert warning.startswith(f"warning: user {admin.id}: its email is 532 characters long")
