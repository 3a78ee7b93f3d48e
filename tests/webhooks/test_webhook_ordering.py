"""Out-of-order and repeated deliveries converge (R5): each teammate keeps the `created_at` of the
newest notification applied, an older one never overwrites newer state, and on a tie a removal
wins. Checked over HTTP for the named cases, and as a hypothesis property over the plain apply
functions for any order and any duplication of a generated set of events."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import permutations
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, update
from sqlalchemy.orm import Session

from app.intercom.models import IntercomAdmin, IntercomTeam, IntercomWorkspace
from app.intercom.notifications import Notification, parse_notification
from app.simulator import SimulatorServer, build_notification, encode_notification
from app.snapshot.reference import build_snapshot
from app.store import inbox
from app.store.engine import Database, create_database
from app.store.migrate import upgrade_to_head
from app.store.models import WebhookEvent, utcnow
from app.store.reads import read_snapshot
from app.store.versioning import lock_store_state, record_changes
from app.store.workset import TeammateWorkset
from app.sync.baseline import FetchedWorkspace, apply_baseline
from app.webhooks.apply_notification import ApplyOutcome, apply_notification
from app.webhooks.inbox_drainer import MAX_ATTEMPTS, apply_pending_batch
from harness.databases import database_server
from harness.service import OPERATOR_TOKEN, ServiceServer, signed_headers, snapshot
from harness.waiting import wait_for

WEBHOOK_PATH = "/webhooks/intercom"
ADDED = "admin.added_to_workspace"
REMOVED = "admin.removed_from_workspace"
AWAY = "admin.away_mode_updated"
LOGGED_IN = "admin.logged_in"
LOGGED_OUT = "admin.logged_out"


# ----- over HTTP ---------------------------------------------------------------------------------


def item(
    user_id: str,
    *,
    name: str = "Ordered Teammate",
    team_ids: list[str] | None = None,
    away: bool = False,
) -> dict[str, Any]:
    return {
        "type": "admin",
        "id": int(user_id),
        "name": name,
        "email": f"t{user_id}@acme.example",
        "job_title": None,
        "away_mode_enabled": away,
        "away_mode_reassign": False,
        "has_inbox_seat": True,
        "team_ids": [int(t) for t in (team_ids or [])],
    }


class Deliverer:
    """Delivers notifications one at a time, each applied before the next is sent, so the
    order of application is exactly the order of delivery."""

    def __init__(self, service: ServiceServer, sim: SimulatorServer) -> None:
        self.service = service
        self.workspace = sim.workspace.id_code
        self.http = httpx.Client(base_url=service.url, timeout=10)
        self.operator = service.client(OPERATOR_TOKEN)
        self.reader = service.client()

    def close(self) -> None:
        for client in (self.http, self.operator, self.reader):
            client.close()

    def send(self, topic: str, payload: dict[str, Any], created_at: int) -> str:
        envelope = build_notification(topic, payload, app_id=self.workspace, created_at=created_at)
        body = encode_notification(envelope)
        response = self.http.post(WEBHOOK_PATH, content=body, headers=signed_headers(body))
        assert response.json() == {"status": "accepted"}, response.text
        notification_id: str = envelope["id"]

        def outcome() -> str | None:
            items = self.operator.get("/webhook-events", params={"limit": 1000}).json()["items"]
            found = next(e["outcome"] for e in items if e["id"] == notification_id)
            return None if found == "pending" else str(found)

        return wait_for(outcome, timeout=30, what=f"{topic} to be processed")

    def user(self, user_id: str, *, include_removed: bool = False) -> dict[str, Any] | None:
        params = {"include_removed": "true"} if include_removed else {}
        body = snapshot(self.reader, **params)
        return next((u for u in body["users"] if u["id"] == user_id), None)


@pytest.fixture
def deliverer(service: ServiceServer, sim: SimulatorServer) -> Iterator[Deliverer]:
    deliverer = Deliverer(service, sim)
    yield deliverer
    deliverer.close()


def team_of(sim: SimulatorServer) -> str:
    return next(iter(sim.workspace.teams))


class TestAddedAndRemoved:
    def test_every_order_of_added_then_a_later_removed_ends_removed(
        self, deliverer: Deliverer, sim: SimulatorServer
    ) -> None:
        t1 = int(time.time()) - 100
        team = team_of(sim)
        for n, order in enumerate(permutations([(ADDED, t1), (REMOVED, t1 + 10)])):
            user_id = f"73000{n}"
            for topic, created_at in order:
                deliverer.send(topic, item(user_id, team_ids=[team]), created_at)
            assert deliverer.user(user_id) is None, order
            tombstone = deliverer.user(user_id, include_removed=True)
            assert tombstone is not None, order
            assert tombstone["status"] == "deleted", order
            assert tombstone["team_ids"] == [], order

    def test_every_order_of_removed_then_a_later_added_ends_present(
        self, deliverer: Deliverer, sim: SimulatorServer
    ) -> None:
        t1 = int(time.time()) - 100
        team = team_of(sim)
        for n, order in enumerate(permutations([(REMOVED, t1), (ADDED, t1 + 10)])):
            user_id = f"73010{n}"
            for topic, created_at in order:
                payload = item(user_id, team_ids=[team] if topic == ADDED else [])
                deliverer.send(topic, payload, created_at)
            user = deliverer.user(user_id)
            assert user is not None, order
            assert user["status"] == "enabled", order
            assert user["team_ids"] == [team], order

    def test_on_equal_created_at_the_removal_wins_in_either_order(
        self, deliverer: Deliverer, sim: SimulatorServer
    ) -> None:
        t = int(time.time()) - 100
        team = team_of(sim)
        for n, order in enumerate(permutations([ADDED, REMOVED])):
            user_id = f"73020{n}"
            outcomes = [deliverer.send(topic, item(user_id, team_ids=[team]), t) for topic in order]
            assert deliverer.user(user_id) is None, (order, outcomes)

    def test_a_removal_is_not_undone_by_a_late_older_added_for_a_known_teammate(
        self, deliverer: Deliverer, sim: SimulatorServer
    ) -> None:
        with sim.workspace.lock:
            admin = next(a for a in sim.workspace.admins.values() if a.team_ids)
            admin_id, teams = admin.id, list(admin.team_ids)
        now = int(time.time())
        assert deliverer.send(REMOVED, item(admin_id), now) == "applied"

        outcome = deliverer.send(ADDED, item(admin_id, team_ids=teams), now - 3600)

        assert outcome == "ignored"
        assert deliverer.user(admin_id) is None


class TestAwayMode:
    def test_an_older_away_change_never_overwrites_a_newer_one(
        self, deliverer: Deliverer, sim: SimulatorServer
    ) -> None:
        user_id = "7303001"
        t = int(time.time()) - 1000
        deliverer.send(ADDED, item(user_id, team_ids=[team_of(sim)]), t)
        assert deliverer.send(AWAY, item(user_id, away=True), t + 20) == "applied"

        assert deliverer.send(AWAY, item(user_id, away=False), t + 10) == "ignored"
        user = deliverer.user(user_id)
        assert user is not None
        assert user["profile"]["away_mode_enabled"] is True

    def test_a_newer_added_keeps_a_newer_away_change_but_takes_the_rest(
        self, deliverer: Deliverer, sim: SimulatorServer
    ) -> None:
        user_id = "7303002"
        t = int(time.time()) - 1000
        team = team_of(sim)
        deliverer.send(ADDED, item(user_id, name="First", team_ids=[team]), t)
        deliverer.send(AWAY, item(user_id, away=True), t + 30)

        # Newer than the first "added", older than the away change.
        deliverer.send(ADDED, item(user_id, name="Second", team_ids=[team], away=False), t + 20)

        user = deliverer.user(user_id)
        assert user is not None
        assert user["display_name"] == "Second"
        assert user["profile"]["away_mode_enabled"] is True


# ----- the property: any order, any duplication, one result --------------------------------------

WORKSPACE = "sim0ws01"
TEAMS = ("801", "802", "803")
# 901 and 902 are in the store's baseline; 903 is known only through notifications.
TEAMMATES = ("901", "902", "903")
BASE_TIME = 1_760_000_000
KINDS = (ADDED, REMOVED, AWAY, LOGGED_IN, LOGGED_OUT)


@dataclass(frozen=True)
class Event:
    notification_id: str
    topic: str
    created_at: int
    body: bytes

    def notification(self) -> Notification:
        return parse_notification(self.body)


def _event(index: int, topic: str, created_at: int, payload: dict[str, Any]) -> Event:
    envelope = build_notification(
        topic, payload, app_id=WORKSPACE, created_at=created_at, notification_id=f"notif_{index}"
    )
    return Event(f"notif_{index}", topic, created_at, encode_notification(envelope))


@st.composite
def admin_items(draw: st.DrawFn, user_id: str, topic: str) -> dict[str, Any]:
    numeric = draw(st.booleans())
    teams = draw(st.lists(st.sampled_from(TEAMS), unique=True, max_size=3))
    return {
        "type": "admin",
        "id": int(user_id) if numeric else user_id,
        "name": draw(st.sampled_from(["Ada", "Bo", "Cy"])),
        "email": f"{user_id}@acme.example",
        "job_title": draw(st.sampled_from([None, "Support", "Sales"])),
        "away_mode_enabled": draw(st.booleans()),
        "away_mode_reassign": draw(st.booleans()),
        "has_inbox_seat": draw(st.booleans()),
        # A removal arrives with memberships already cleared.
        "team_ids": [] if topic == REMOVED else [int(t) if numeric else t for t in teams],
    }


@st.composite
def event_sets(draw: st.DrawFn) -> list[Event]:
    """Events with distinct `created_at` values, plus deliberate added/removed ties."""
    count = draw(st.integers(min_value=1, max_value=8))
    offsets = draw(st.lists(st.integers(0, 5_000), min_size=count, max_size=count, unique=True))
    events: list[Event] = []
    pairs: list[tuple[str, str, int]] = []
    for offset in offsets:
        topic = draw(st.sampled_from(KINDS))
        user_id = draw(st.sampled_from(TEAMMATES))
        payload = draw(admin_items(user_id, topic))
        events.append(_event(len(events), topic, BASE_TIME + offset, payload))
        pairs.append((topic, user_id, BASE_TIME + offset))
    ties = draw(st.lists(st.integers(0, count - 1), unique=True, max_size=2))
    for index in ties:
        topic, user_id, created_at = pairs[index]
        if topic not in (ADDED, REMOVED):
            continue
        other = REMOVED if topic == ADDED else ADDED
        events.append(_event(len(events), other, created_at, draw(admin_items(user_id, other))))
    return events


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[Event], list[Event]]:
    """(the events, a delivery sequence: every event at least once, in any order)."""
    events = draw(event_sets())
    repeats = draw(st.lists(st.integers(1, 2), min_size=len(events), max_size=len(events)))
    sequence = [event for event, times in zip(events, repeats, strict=True) for _ in range(times)]
    return events, draw(st.permutations(sequence))


def seeded_template(folder: Path) -> Path:
    """A migrated store holding a baseline of two teammates in three teams."""
    path = folder / "template.db"
    url = f"sqlite:///{path}"
    upgrade_to_head(url)
    db = create_database(url)
    fetched = FetchedWorkspace(
        workspace=IntercomWorkspace(id_code=WORKSPACE, name="Acme", region="US"),
        admins=[
            IntercomAdmin(id="901", name="Base One", email="901@acme.example", team_ids=["801"]),
            IntercomAdmin(
                id="902",
                name="Base Two",
                email="902@acme.example",
                team_ids=["802", "803"],
                away_mode_enabled=True,
            ),
        ],
        teams=[IntercomTeam(id=t, name=f"Team {t}") for t in TEAMS],
        fetch_started_at=utcnow(),
        roles_supported=False,
    )
    with db.writing() as session:
        apply_baseline(session, fetched)
    db.dispose()
    return path


@pytest.fixture(scope="module")
def stores() -> Iterator[tuple[Store, Store, Store, Store]]:
    """(expected, direct, through the inbox one by one, through the inbox in one batch): four
    stores seeded alike."""
    folder = Path(tempfile.mkdtemp(prefix="ordering-"))
    template = seeded_template(folder)
    quartet = (
        Store(template, "expected"),
        Store(template, "direct"),
        Store(template, "inbox"),
        Store(template, "batched"),
    )
    try:
        yield quartet
    finally:
        for store in quartet:
            store.close()
        shutil.rmtree(folder, ignore_errors=True)


def _no_fsync(dbapi_connection: Any, _record: Any) -> None:
    # Durability is not under test here, and fsyncs would make each example slow.
    dbapi_connection.execute("PRAGMA synchronous=OFF")


class Store:
    """A store reset to the seeded template before each example. The engine lives across
    examples so its compiled-statement cache does too (a fresh engine per example would spend
    most of its time compiling SQL)."""

    def __init__(self, template: Path, name: str) -> None:
        self.template = template
        self.path = template.with_name(f"{name}.db")
        self.db: Database = create_database(f"sqlite:///{self.path}")
        event.listen(self.db.engine, "connect", _no_fsync)

    def reset(self) -> Store:
        self.db.dispose()
        for suffix in ("-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(self.template, self.path)
        return self

    def close(self) -> None:
        self.db.dispose()

    def apply(self, event: Event) -> ApplyOutcome:
        """One event in its own transaction, as the inbox drainer commits it."""
        with self.db.writing() as session:
            state = lock_store_state(session)
            workset = TeammateWorkset(session)
            outcome = apply_notification(
                workset,
                event.notification(),
                version=state.version + 1,
                now=utcnow(),
                expected_app_id=WORKSPACE,
            )
            workset.flush()
            record_changes(session, state, outcome.changes)
        return outcome.status

    def apply_in_order(self, sequence: list[Event]) -> None:
        """Apply each delivery in turn; events deferred because their teammate was not known
        yet are retried at the end until they stop making progress."""
        deferred = [event for event in sequence if self.apply(event) == ApplyOutcome.DEFERRED]
        while deferred:
            still = [event for event in deferred if self.apply(event) == ApplyOutcome.DEFERRED]
            if len(still) == len(deferred):
                break
            deferred = still

    def deliver_through_inbox(self, sequence: list[Event]) -> None:
        """Store each delivery in the inbox (deduplicated) and apply it, as the service does;
        events deferred because their teammate was not known yet are retried at the end (the
        inbox drainer retries them with a backoff of seconds, by when the rest has arrived)."""
        for delivery in sequence:
            self._store([delivery])
            apply_pending_batch(self.db, expected_app_id=WORKSPACE)
        self._drain()

    def deliver_all_then_apply(self, sequence: list[Event]) -> None:
        """Store every delivery first, then apply: one batch holds every event, so several
        events for one teammate apply through one workset before it is written back."""
        self._store(sequence)
        apply_pending_batch(self.db, expected_app_id=WORKSPACE)
        self._drain()

    def _store(self, deliveries: list[Event]) -> None:
        events = [
            inbox.NewEvent.of(delivery.notification(), delivery.body, received_at=utcnow())
            for delivery in deliveries
        ]
        with self.db.writing() as session:
            inbox.store_events(session, events)

    def _drain(self) -> None:
        """Apply retries until the inbox is empty (the inbox drainer retries deferred events with a
        backoff of seconds, by when the rest has arrived)."""
        for _ in range(MAX_ATTEMPTS):
            with self.db.writing() as session:
                if not inbox.backlog(session).pending:
                    return
                self._retries_due_now(session)
            apply_pending_batch(self.db, expected_app_id=WORKSPACE)
        raise AssertionError("the inbox never drained")

    @staticmethod
    def _retries_due_now(session: Session) -> None:
        session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.status == inbox.InboxStatus.PENDING)
            .values(next_attempt_at=utcnow())
        )

    def served(self) -> dict[str, Any]:
        views = {}
        with self.db.reading() as session:
            for include_removed in (False, True):
                body = build_snapshot(
                    read_snapshot(session, include_removed=include_removed), roles_enabled=False
                )
                body.pop("version")
                body.pop("synced_at")
                views["all" if include_removed else "current"] = body
        return views


def canonical(events: list[Event]) -> list[Event]:
    """Once each, in `created_at` order (ties in generation order: removal wins either way)."""
    return sorted(events, key=lambda event: event.created_at)


@pytest.mark.skipif(
    database_server() is not None,
    reason="runs on its own SQLite stores whatever the backend: the SQLite pass covers it",
)
@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=deliveries())
def test_any_order_and_duplication_converges_to_the_created_at_order(
    stores: tuple[Store, Store, Store, Store], case: tuple[list[Event], list[Event]]
) -> None:
    events, sequence = case
    expected_store, direct, through_inbox, batched = (store.reset() for store in stores)

    expected_store.apply_in_order(canonical(events))
    direct.apply_in_order(sequence)
    through_inbox.deliver_through_inbox(sequence)
    batched.deliver_all_then_apply(sequence)

    expected = expected_store.served()
    assert direct.served() == expected
    assert through_inbox.served() == expected
    assert batched.served() == expected


def _teammate(
    user_id: str, teams: list[str], *, name: str = "Ada", away: bool = False
) -> dict[str, Any]:
    return {
        "type": "admin",
        "id": user_id,
        "name": name,
        "email": f"{user_id}@acme.example",
        "away_mode_enabled": away,
        "away_mode_reassign": False,
        "has_inbox_seat": True,
        "team_ids": teams,
    }


@pytest.mark.skipif(
    database_server() is not None,
    reason="runs on its own SQLite stores whatever the backend: the SQLite pass covers it",
)
def test_one_batch_with_many_events_per_teammate_applies_like_one_at_a_time(
    stores: tuple[Store, Store, Store, Store],
) -> None:
    """Several events for one teammate inside one batch: a membership added and removed again,
    a teammate inserted and then changed, removed and added back, before the batch is written."""
    t = BASE_TIME
    events = [
        # 903 is new: added in two teams, then in one of them only, then away, then signed in.
        _event(1, ADDED, t + 1, _teammate("903", ["801", "802"])),
        _event(2, ADDED, t + 2, _teammate("903", ["801"], name="Ada Two")),
        _event(3, AWAY, t + 3, _teammate("903", ["801"], away=True)),
        _event(4, LOGGED_IN, t + 4, _teammate("903", ["801"])),
        # 901 (in 801 at baseline) leaves, comes back in 803, leaves 803 for 801 again.
        _event(5, REMOVED, t + 5, _teammate("901", [])),
        _event(6, ADDED, t + 6, _teammate("901", ["803"])),
        _event(7, ADDED, t + 7, _teammate("901", ["801"])),
        # 902 (in 802 and 803) changes teams, then is removed.
        _event(8, ADDED, t + 8, _teammate("902", ["801"], name="Bo")),
        _event(9, REMOVED, t + 9, _teammate("902", [])),
        # A teammate unknown until the removal: a tombstone, then an away change to it.
        _event(10, REMOVED, t + 10, _teammate("904", [])),
        _event(11, AWAY, t + 11, _teammate("904", [], away=True)),
    ]
    expected_store, _, _, batched = (store.reset() for store in stores)

    expected_store.apply_in_order(events)
    batched.deliver_all_then_apply(events)

    expected = expected_store.served()
    assert batched.served() == expected
    members = {team["id"]: team["member_ids"] for team in expected["current"]["teams"]}
    assert members == {"801": ["901", "903"], "802": [], "803": []}
