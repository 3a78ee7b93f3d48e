"""What each webhook topic does to the served state, over HTTP against the real service and the
simulator: teammates added (with memberships), removed (tombstone, grants gone), away mode,
sign-ins, numeric and string ids, and activity-log events that trigger one debounced refresh
(R6) or are ignored."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import select, update

from app.simulator import (
    SimAdmin,
    SimulatorServer,
    activity_log_item,
    admin_webhook_item,
    build_notification,
    encode_notification,
)
from app.store import inbox
from app.store.engine import create_database
from app.store.models import WebhookEvent, utcnow
from app.webhooks.inbox_drainer import MAX_ATTEMPTS
from harness.service import (
    OPERATOR_TOKEN,
    ServiceServer,
    served_truth,
    signed_headers,
    simulator_truth,
    snapshot,
)
from harness.waiting import wait_for
from tests.intercom.test_activity_types import ACCESS_CHANGING

WEBHOOK_PATH = "/webhooks/intercom"
ACTIVITY_TOPIC = "admin.activity_log_event.created"


# ----- helpers -----------------------------------------------------------------------------------


def deliver(
    service: ServiceServer, envelope: dict[str, Any], client: httpx.Client | None = None
) -> dict[str, Any]:
    """Sign and POST one notification; returns the envelope for later look-ups."""
    body = encode_notification(envelope)
    if client is None:
        with httpx.Client(timeout=10) as own:
            return deliver(service, envelope, own)
    response = client.post(service.url + WEBHOOK_PATH, content=body, headers=signed_headers(body))
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "accepted"}, response.text
    return envelope


def notify(sim: SimulatorServer, topic: str, item: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return build_notification(topic, item, app_id=sim.workspace.id_code, **kwargs)


def events_by_id(service: ServiceServer) -> dict[str, dict[str, Any]]:
    with service.client(OPERATOR_TOKEN) as client:
        response = client.get("/webhook-events", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return {event["id"]: event for event in response.json()["items"]}


def settle(service: ServiceServer, *envelopes: dict[str, Any]) -> dict[str, str]:
    """Wait until every envelope's inbox event has left `pending`; returns their outcomes."""
    wanted = [envelope["id"] for envelope in envelopes]

    def settled() -> dict[str, str] | None:
        events = events_by_id(service)
        outcomes = {nid: events[nid]["outcome"] for nid in wanted if nid in events}
        if len(outcomes) == len(wanted) and "pending" not in outcomes.values():
            return outcomes
        return None

    return wait_for(settled, timeout=30, what="the webhook events to be processed")


def served(service: ServiceServer, *, include_removed: bool = False) -> dict[str, Any]:
    with service.client() as client:
        return snapshot(client, **({"include_removed": "true"} if include_removed else {}))


def user_in(body: dict[str, Any], user_id: str) -> dict[str, Any] | None:
    return next((user for user in body["users"] if user["id"] == user_id), None)


def grants_of(body: dict[str, Any], user_id: str) -> set[str]:
    return {g["id"] for g in body["grants"] if g["principal"]["resource_id"] == user_id}


def member_of_workspace(body: dict[str, Any], user_id: str) -> set[str]:
    """The grant every active teammate holds."""
    return {f"workspace:{body['workspace']['id']}:member:user:{user_id}"}


def iso(unix: int) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def existing_teammate(sim: SimulatorServer, *, in_teams: int = 1) -> SimAdmin:
    """A human teammate of the simulator that is a member of at least `in_teams` teams."""
    with sim.workspace.lock:
        admin = next(
            a
            for a in sim.workspace.admins.values()
            if len(a.team_ids) >= in_teams and not a.email.endswith("@intercom.io")
        )
        return admin.copy()


def webhook_runs(service: ServiceServer) -> list[dict[str, Any]]:
    with service.client(OPERATOR_TOKEN) as client:
        response = client.get("/sync-runs", params={"limit": 100})
    assert response.status_code == 200, response.text
    return [run for run in response.json()["items"] if run["trigger"] == "webhook"]


def finished_webhook_runs(service: ServiceServer) -> list[dict[str, Any]] | None:
    runs = webhook_runs(service)
    return runs if runs and all(run["finished_at"] for run in runs) else None


# ----- admin.added_to_workspace ------------------------------------------------------------------


class TestAdded:
    def test_added_upserts_the_teammate_and_its_memberships_from_team_ids(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        teams = list(sim.workspace.teams)[:2]
        admin = sim.workspace.upsert_admin(
            SimAdmin(
                id="7200001",
                name="Nia Numeric",
                email="nia@acme.example",
                job_title="Support engineer",
                has_inbox_seat=True,
                team_ids=teams,
            )
        )
        item = admin_webhook_item(admin, numeric_id=True)  # as some captured deliveries
        assert isinstance(item["id"], int)
        assert all(isinstance(t, int) for t in item["team_ids"])
        envelope = deliver(service, notify(sim, "admin.added_to_workspace", item))

        assert settle(service, envelope) == {envelope["id"]: "applied"}
        body = served(service)
        user = user_in(body, "7200001")
        assert user == {
            "id": "7200001",
            "display_name": "Nia Numeric",
            "email": "nia@acme.example",
            "login": "nia@acme.example",
            "status": "enabled",
            "account_type": "human",
            "team_ids": sorted(teams),
            "last_login_at": None,
            "profile": {
                "job_title": "Support engineer",
                "has_inbox_seat": True,
                "away_mode_enabled": False,
                "away_mode_reassign": False,
                "last_login_method": None,
            },
        }
        assert grants_of(body, "7200001") == {
            f"team:{t}:member:user:7200001" for t in teams
        } | member_of_workspace(body, "7200001")
        members = {team["id"]: team["member_ids"] for team in body["teams"]}
        assert all("7200001" in members[t] for t in teams)
        with service.client() as client:
            assert client.get("/api/v1/users/7200001").json() == user
        # Nothing asked for a refresh: every team was known.
        assert webhook_runs(service) == []

    def test_numeric_and_string_ids_are_stored_and_served_as_the_same_strings(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        team = next(iter(sim.workspace.teams))
        numeric = sim.workspace.upsert_admin(
            SimAdmin(id="7200002", name="Num", email="num@acme.example", team_ids=[team])
        )
        textual = sim.workspace.upsert_admin(
            SimAdmin(id="7200003", name="Str", email="str@acme.example", team_ids=[team])
        )
        numeric_item = admin_webhook_item(numeric, numeric_id=True)
        string_item = {**admin_webhook_item(textual, numeric_id=False), "team_ids": [team]}
        assert numeric_item["id"] == 7200002
        assert numeric_item["team_ids"] == [int(team)]
        assert string_item["id"] == "7200003"
        assert string_item["team_ids"] == [team]

        sent = [
            deliver(service, notify(sim, "admin.added_to_workspace", numeric_item)),
            deliver(service, notify(sim, "admin.added_to_workspace", string_item)),
        ]

        assert set(settle(service, *sent).values()) == {"applied"}
        body = served(service)
        for user_id in ("7200002", "7200003"):
            user = user_in(body, user_id)
            assert user is not None, user_id
            assert user["team_ids"] == [team], user
            assert grants_of(body, user_id) == {
                f"team:{team}:member:user:{user_id}"
            } | member_of_workspace(body, user_id)
        assert {e["teammate_id"] for e in events_by_id(service).values()} == {"7200002", "7200003"}

    def test_added_for_a_known_teammate_updates_fields_and_memberships(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        admin = existing_teammate(sim)
        other = next(t for t in sim.workspace.teams if t not in admin.team_ids)
        updated = sim.workspace.upsert_admin(
            replace(admin, name="Renamed Person", job_title="Lead", team_ids=[other])
        )
        envelope = deliver(
            service, notify(sim, "admin.added_to_workspace", admin_webhook_item(updated))
        )

        assert settle(service, envelope) == {envelope["id"]: "applied"}
        body = served(service)
        user = user_in(body, admin.id)
        assert user is not None
        assert (user["display_name"], user["profile"]["job_title"]) == ("Renamed Person", "Lead")
        assert user["team_ids"] == [other]
        assert grants_of(body, admin.id) == {
            f"team:{other}:member:user:{admin.id}"
        } | member_of_workspace(body, admin.id)

    def test_unknown_team_ids_are_dropped_and_a_refresh_is_scheduled(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        known = next(iter(sim.workspace.teams))
        admin = sim.workspace.upsert_admin(
            SimAdmin(id="7200004", name="Una", email="una@acme.example", team_ids=[known])
        )
        # A team id that neither the store nor Intercom's /teams knows (e.g. deleted since).
        item = {**admin_webhook_item(admin), "team_ids": [int(known), 424242]}
        envelope = deliver(service, notify(sim, "admin.added_to_workspace", item))

        assert settle(service, envelope) == {envelope["id"]: "applied"}
        runs = wait_for(
            lambda: finished_webhook_runs(service),
            timeout=30,
            what="the refresh that the unknown team asked for",
        )
        assert [run["status"] for run in runs] == ["succeeded"]
        body = served(service)
        user = user_in(body, "7200004")
        assert user is not None
        assert user["team_ids"] == [known]
        assert "424242" not in {team["id"] for team in body["teams"]}
        assert not any("424242" in grant["id"] for grant in body["grants"])
        assert served_truth(body) == simulator_truth(sim)


# ----- admin.removed_from_workspace --------------------------------------------------------------


class TestRemoved:
    def test_removed_takes_the_teammate_out_and_keeps_a_tombstone(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        admin = existing_teammate(sim, in_teams=1)
        before = served(service)
        assert grants_of(before, admin.id)
        sim.workspace.remove_admin(admin.id)
        item = {**admin_webhook_item(admin), "team_ids": []}
        created = int(time.time())
        envelope = deliver(
            service, notify(sim, "admin.removed_from_workspace", item, created_at=created)
        )

        assert settle(service, envelope) == {envelope["id"]: "applied"}
        body = served(service)
        assert user_in(body, admin.id) is None
        assert grants_of(body, admin.id) == set()
        assert all(admin.id not in team["member_ids"] for team in body["teams"])
        assert body["version"] == before["version"] + 1
        everyone = served(service, include_removed=True)
        tombstone = user_in(everyone, admin.id)
        assert tombstone is not None
        assert tombstone["status"] == "deleted"
        assert tombstone["removed_at"] == iso(created)
        assert tombstone["team_ids"] == []
        assert grants_of(everyone, admin.id) == set()
        with service.client() as client:
            single = client.get(f"/api/v1/users/{admin.id}")
            assert single.status_code == 200
            assert single.json()["status"] == "deleted"
            for team_id in admin.team_ids:
                page = client.get(f"/api/v1/teams/{team_id}/members").json()
                assert {"user_id": admin.id} not in page["items"]
        assert served_truth(body) == simulator_truth(sim)

    def test_removed_for_an_unknown_teammate_leaves_only_a_tombstone(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        before = served(service)
        ghost = SimAdmin(id="7200005", name="Ghost", email="ghost@acme.example")
        envelope = deliver(
            service, notify(sim, "admin.removed_from_workspace", admin_webhook_item(ghost))
        )

        assert settle(service, envelope) == {envelope["id"]: "applied"}
        after = served(service)
        assert after["users"] == before["users"]
        assert after["grants"] == before["grants"]
        # The tombstone keeps a late, older "added" from bringing them in.
        ghost_row = user_in(served(service, include_removed=True), "7200005")
        assert ghost_row is not None
        assert ghost_row["status"] == "deleted"


# ----- away mode and sign-ins --------------------------------------------------------------------


def without(user: dict[str, Any], *paths: str) -> dict[str, Any]:
    """`user` minus the named fields (`profile.x` reaches into the profile)."""
    copy = {**user, "profile": dict(user["profile"])}
    for path in paths:
        if path.startswith("profile."):
            copy["profile"].pop(path.removeprefix("profile."))
        else:
            copy.pop(path)
    return copy


class TestProfileSignals:
    def test_away_mode_updated_changes_only_the_away_fields(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        admin = existing_teammate(sim)
        before = user_in(served(service), admin.id)
        assert before is not None
        assert before["profile"]["away_mode_enabled"] is False
        away = sim.workspace.upsert_admin(
            replace(admin, away_mode_enabled=True, away_mode_reassign=True)
        )
        envelope = deliver(
            service, notify(sim, "admin.away_mode_updated", admin_webhook_item(away))
        )

        assert settle(service, envelope) == {envelope["id"]: "applied"}
        after = user_in(served(service), admin.id)
        assert after is not None
        assert after["profile"]["away_mode_enabled"] is True
        assert after["profile"]["away_mode_reassign"] is True
        fields = ("profile.away_mode_enabled", "profile.away_mode_reassign")
        assert without(after, *fields) == without(before, *fields)

    def test_logged_in_records_last_login_and_changes_nothing_else(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        admin = existing_teammate(sim, in_teams=1)
        body_before = served(service)
        before = user_in(body_before, admin.id)
        assert before is not None
        assert before["last_login_at"] is None
        # The payload is the whole admin; nothing but the sign-in time may come from it.
        item = {
            **admin_webhook_item(admin),
            "name": "Not Applied",
            "job_title": "Not Applied",
            "away_mode_enabled": True,
            "team_ids": [],
        }
        created = int(time.time()) - 30
        envelope = deliver(service, notify(sim, "admin.logged_in", item, created_at=created))

        assert settle(service, envelope) == {envelope["id"]: "applied"}
        body = served(service)
        after = user_in(body, admin.id)
        assert after is not None
        assert after["last_login_at"] == iso(created)
        assert without(after, "last_login_at") == without(before, "last_login_at")
        assert grants_of(body, admin.id) == grants_of(body_before, admin.id)
        assert body["version"] == body_before["version"] + 1

    def test_logged_out_changes_nothing_served(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        admin = existing_teammate(sim)
        login = deliver(
            service,
            notify(
                sim, "admin.logged_in", admin_webhook_item(admin), created_at=int(time.time()) - 60
            ),
        )
        settle(service, login)
        before = served(service)
        logout = deliver(
            service,
            notify(
                sim,
                "admin.logged_out",
                {**admin_webhook_item(admin), "name": "Not Applied"},
                created_at=int(time.time()),
            ),
        )

        assert settle(service, logout) == {logout["id"]: "applied"}
        after = served(service)
        assert after == before

    def test_an_older_sign_in_does_not_replace_a_newer_one(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        admin = existing_teammate(sim)
        now = int(time.time())
        newer = deliver(
            service, notify(sim, "admin.logged_in", admin_webhook_item(admin), created_at=now)
        )
        settle(service, newer)
        older = deliver(
            service,
            notify(sim, "admin.logged_in", admin_webhook_item(admin), created_at=now - 3600),
        )

        settle(service, older)
        user = user_in(served(service), admin.id)
        assert user is not None
        assert user["last_login_at"] == iso(now)


# ----- admin.activity_log_event.created ----------------------------------------------------------


def activity(sim: SimulatorServer, activity_type: str) -> dict[str, Any]:
    by = existing_teammate(sim)
    item = activity_log_item(activity_type, performed_by_id=by.id, performed_by_email=by.email)
    return notify(sim, ACTIVITY_TOPIC, item)


class TestActivityLog:
    def test_a_team_membership_activity_refreshes_teammates_and_teams(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        admin = existing_teammate(sim, in_teams=1)
        left = admin.team_ids[0]
        joined = next(t for t in sim.workspace.teams if t not in admin.team_ids)
        sim.workspace.remove_member(left, admin.id)
        sim.workspace.add_member(joined, admin.id)
        assert served_truth(served(service)) != simulator_truth(sim)

        envelope = deliver(service, activity(sim, "app_team_membership_modification"))

        assert settle(service, envelope) == {envelope["id"]: "applied"}
        runs = wait_for(lambda: finished_webhook_runs(service), timeout=30, what="the refresh run")
        assert [run["status"] for run in runs] == ["succeeded"]
        assert runs[0]["stats"]["memberships_added"] == 1
        assert runs[0]["stats"]["memberships_removed"] == 1
        assert served_truth(served(service)) == simulator_truth(sim)

    def test_a_burst_of_team_activity_causes_exactly_one_refresh(
        self, start_service: Callable[..., ServiceServer], sim: SimulatorServer
    ) -> None:
        debounce = 2.0
        service = start_service(webhook_refresh_debounce_seconds=debounce)
        admins_fetches = len(sim.requests("/admins"))
        teams_fetches = len(sim.requests("/teams"))
        admin = existing_teammate(sim, in_teams=1)
        sim.workspace.remove_member(admin.team_ids[0], admin.id)
        burst = [activity(sim, "app_team_membership_modification") for _ in range(100)]

        with httpx.Client(timeout=10) as client, ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda envelope: deliver(service, envelope, client), burst))

        outcomes = settle(service, *burst)
        assert set(outcomes.values()) == {"applied"}
        wait_for(lambda: finished_webhook_runs(service), timeout=30, what="the refresh run")
        # Give a second (wrong) refresh every chance to show up before counting.
        time.sleep(debounce + 1.0)
        assert len(webhook_runs(service)) == 1
        assert len(sim.requests("/admins")) - admins_fetches == 1
        assert len(sim.requests("/teams")) - teams_fetches == 1
        assert served_truth(served(service)) == simulator_truth(sim)

    def test_an_activity_that_does_not_touch_access_is_ignored(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        admins_fetches = len(sim.requests("/admins"))
        before = served(service)
        envelope = deliver(service, activity(sim, "ai_inbox_translation_setting_change"))

        assert settle(service, envelope) == {envelope["id"]: "ignored"}
        # Longer than the debounce window (0.3 s in tests): a refresh would have started.
        time.sleep(1.5)
        assert webhook_runs(service) == []
        assert len(sim.requests("/admins")) == admins_fetches
        assert served(service)["version"] == before["version"]

    def test_thirty_sign_ins_cause_no_refresh(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        admins_fetches = len(sim.requests("/admins"))
        before = served(service)
        kinds = ["admin_login_success", "admin_logout", "admin_login_failure"]
        sign_ins = [activity(sim, kinds[n % len(kinds)]) for n in range(30)]

        with httpx.Client(timeout=10) as client:
            for envelope in sign_ins:
                deliver(service, envelope, client)

        outcomes = settle(service, *sign_ins)
        # Usage evidence (issue 20): a sign-in sets the last login and a failed one is kept as
        # an access event; a sign-out is neither. None of them is a change of access.
        expected = {"admin_login_success": "applied", "admin_login_failure": "applied"}
        for envelope in sign_ins:
            kind = envelope["data"]["item"]["activity_type"]
            assert outcomes[envelope["id"]] == expected.get(kind, "ignored"), kind
        # Longer than the debounce window (0.3 s in tests): a refresh would have started.
        time.sleep(1.5)
        assert webhook_runs(service) == []
        assert len(sim.requests("/admins")) == admins_fetches
        after = served(service)
        assert served_truth(after) == served_truth(before)
        assert after["grants"] == before["grants"]

    def test_every_access_changing_type_among_sign_ins_causes_exactly_one_refresh(
        self, start_service: Callable[..., ServiceServer], sim: SimulatorServer
    ) -> None:
        debounce = 2.0
        service = start_service(webhook_refresh_debounce_seconds=debounce)
        admins_fetches = len(sim.requests("/admins"))
        admin = existing_teammate(sim, in_teams=1)
        sim.workspace.remove_member(admin.team_ids[0], admin.id)
        changes = [activity(sim, kind) for kind in sorted(ACCESS_CHANGING)]
        sign_ins = [activity(sim, "admin_login_success") for _ in range(30)]
        burst = changes + sign_ins
        random.Random(17).shuffle(burst)

        with httpx.Client(timeout=10) as client, ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda envelope: deliver(service, envelope, client), burst))

        outcomes = settle(service, *burst)
        assert {outcomes[e["id"]] for e in changes} == {"applied"}
        # Sign-ins are usage evidence (applied: last login, failures as access events),
        # never a refresh.
        assert {outcomes[e["id"]] for e in sign_ins} <= {"applied", "ignored"}
        wait_for(lambda: finished_webhook_runs(service), timeout=30, what="the refresh run")
        # Give a second (wrong) refresh every chance to show up before counting.
        time.sleep(debounce + 1.0)
        assert len(webhook_runs(service)) == 1
        assert len(sim.requests("/admins")) - admins_fetches == 1
        assert served_truth(served(service)) == simulator_truth(sim)

    def test_a_topic_and_activity_type_with_surrounding_whitespace_still_refresh(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        admin = existing_teammate(sim, in_teams=1)
        sim.workspace.remove_member(admin.team_ids[0], admin.id)
        envelope = activity(sim, " app_team_membership_modification\n")
        envelope["topic"] = f"  {ACTIVITY_TOPIC}\t"

        deliver(service, envelope)

        assert settle(service, envelope) == {envelope["id"]: "applied"}
        runs = wait_for(lambda: finished_webhook_runs(service), timeout=30, what="the refresh run")
        assert [run["status"] for run in runs] == ["succeeded"]
        assert runs[0]["stats"]["memberships_removed"] == 1
        assert served_truth(served(service)) == simulator_truth(sim)


def strangers_notifications(sim: SimulatorServer, count: int) -> list[dict[str, Any]]:
    """State notifications about teammates Intercom does not list: every retry finds them
    unknown again."""
    topics = ["admin.logged_in", "admin.logged_out", "admin.away_mode_updated"]
    strangers = [
        SimAdmin(id=f"99000{n}", name=f"Stranger {n}", email=f"stranger{n}@acme.example")
        for n in range(count)
    ]
    return [
        notify(sim, topics[n % len(topics)], admin_webhook_item(stranger))
        for n, stranger in enumerate(strangers)
    ]


def retry_deferred_events_now(database_url: str) -> None:
    """Each deferred event is retried with a backoff of 1 s doubling, up to MAX_ATTEMPTS
    times: make every retry due at once instead of waiting minutes, and wait until each one
    has been applied, until none is left pending."""
    db = create_database(database_url)
    try:
        for _ in range(MAX_ATTEMPTS):
            with db.writing() as session:
                attempts = dict(
                    session.execute(
                        select(WebhookEvent.id, WebhookEvent.attempts).where(
                            WebhookEvent.status == inbox.InboxStatus.PENDING
                        )
                    ).all()
                )
                if not attempts:
                    return
                session.execute(
                    update(WebhookEvent)
                    .where(WebhookEvent.id.in_(attempts))
                    .values(next_attempt_at=utcnow())
                )

            def retried(before: dict[int, int] = attempts) -> bool:
                with db.reading() as session:
                    now = dict(
                        session.execute(
                            select(WebhookEvent.id, WebhookEvent.attempts).where(
                                WebhookEvent.id.in_(before)
                            )
                        ).all()
                    )
                return all(now[key] > count for key, count in before.items())

            wait_for(retried, timeout=30, what="the deferred events to be retried")
    finally:
        db.dispose()


class TestUnknownTeammates:
    def test_retried_notifications_for_unknown_teammates_share_one_refresh(
        self,
        start_service: Callable[..., ServiceServer],
        sim: SimulatorServer,
        database_url: str,
    ) -> None:
        # A window long enough for all nine to arrive before the refresh fetches: one that
        # arrived after it would rightly ask for another (it may be about a new teammate).
        service = start_service(webhook_refresh_debounce_seconds=2.0)
        admins_fetches = len(sim.requests("/admins"))
        envelopes = strangers_notifications(sim, 9)
        with httpx.Client(timeout=10) as client, ThreadPoolExecutor(9) as pool:
            list(pool.map(lambda envelope: deliver(service, envelope, client), envelopes))
        wait_for(lambda: finished_webhook_runs(service), timeout=30, what="the refresh run")

        retry_deferred_events_now(database_url)

        assert set(settle(service, *envelopes).values()) == {"ignored"}
        # Give a refresh asked for by the last retries every chance to show up before counting.
        time.sleep(2.0 + 1.0)
        runs = wait_for(lambda: finished_webhook_runs(service), timeout=30, what="the runs")
        assert len(runs) == 1, runs
        assert len(sim.requests("/admins")) - admins_fetches == 1

    def test_replicas_share_one_refresh_for_unknown_teammates(
        self,
        start_service: Callable[..., ServiceServer],
        sim: SimulatorServer,
        database_url: str,
    ) -> None:
        replicas = [
            start_service(webhook_refresh_debounce_seconds=2.0),
            start_service(webhook_refresh_debounce_seconds=2.0, sync_on_startup=False),
        ]
        admins_fetches = len(sim.requests("/admins"))
        envelopes = strangers_notifications(sim, 12)
        with httpx.Client(timeout=10) as client, ThreadPoolExecutor(12) as pool:
            list(
                pool.map(
                    lambda pair: deliver(replicas[pair[0] % 2], pair[1], client),
                    enumerate(envelopes),
                )
            )
        wait_for(lambda: finished_webhook_runs(replicas[0]), timeout=30, what="the refresh run")

        retry_deferred_events_now(database_url)

        assert set(settle(replicas[1], *envelopes).values()) == {"ignored"}
        time.sleep(2.0 + 1.0)
        runs = wait_for(lambda: finished_webhook_runs(replicas[0]), timeout=30, what="the runs")
        assert len(runs) == 1, runs
        assert len(sim.requests("/admins")) - admins_fetches == 1

    def test_a_failed_refresh_does_not_stop_retries_from_asking_again(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        newcomer = SimAdmin(id="990100", name="Newcomer", email="newcomer@acme.example")
        sim.add_fault(path="/admins", status=503, times=1000)
        created = int(time.time()) - 30
        envelope = deliver(
            service,
            notify(sim, "admin.logged_in", admin_webhook_item(newcomer), created_at=created),
        )
        runs = wait_for(lambda: finished_webhook_runs(service), timeout=30, what="the refresh")
        assert [run["status"] for run in runs] == ["failed"]

        # Intercom answers again, and lists the newcomer now: a later retry's refresh finds them.
        sim.clear_faults()
        sim.workspace.upsert_admin(newcomer)

        assert settle(service, envelope) == {envelope["id"]: "applied"}
        statuses = [run["status"] for run in webhook_runs(service)]  # newest first
        assert statuses[0] == "succeeded"
        assert set(statuses[1:]) == {"failed"}
        user = user_in(served(service), newcomer.id)
        assert user is not None
        assert user["last_login_at"] == iso(created)
