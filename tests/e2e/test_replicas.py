"""Several replicas on one database: real `intercom-sync serve` processes sharing the
store, taking webhooks and resync requests alike. Runs on both backends: two processes on one
SQLite file, or on the PostgreSQL of TEST_DATABASE_URL (SKIP LOCKED claims, advisory locks).

What must hold: one sync at a time across processes, the reconcile schedule fires once per
period between them, every stored webhook is applied exactly once, and every replica serves
the same snapshot (version, ETag, bytes) as the simulator's truth at the end."""

from __future__ import annotations

import collections
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest

from app.simulator import SimulatorServer
from app.simulator.records import SimAdmin
from app.simulator.webhooks import admin_webhook_item, build_notification, encode_notification
from app.sync.schedule import RECONCILE_JITTER
from harness.service import (
    OPERATOR_TOKEN,
    ReplicaFactory,
    ServiceProcess,
    ServiceServer,
    served_truth,
    signed_headers,
    simulator_truth,
    snapshot,
)
from harness.waiting import wait_for

# Several service processes on one store: left out of `make test-fast`.
pytestmark = pytest.mark.slow

# Strictly increasing notification times, later than anything a baseline stamps, so no
# delivery is ignored as older than one already applied.
_created_at = itertools.count(int(time.time()) + 60)


# ----- shared machinery (also used by tests/e2e/test_shutdown.py) ----------------------------


# A replica: a service process, or the service served from the test's own process.
Replica = ServiceProcess | ServiceServer


def operator(replica: Replica) -> httpx.Client:
    return replica.client(token=OPERATOR_TOKEN)


def new_admin(sim: SimulatorServer, number: int) -> SimAdmin:
    """A teammate who joins the simulator's workspace now, in one or two existing teams."""
    teams = sorted(sim.workspace.teams)
    admin = SimAdmin(
        id=str(770000000 + number),
        name=f"Newcomer {number}",
        email=f"newcomer{number}@acme.example",
        team_ids=[teams[number % len(teams)], teams[(number * 7 + 1) % len(teams)]],
    )
    return sim.workspace.upsert_admin(admin)


def notification(sim: SimulatorServer, topic: str, admin: SimAdmin) -> tuple[str, bytes]:
    item = admin_webhook_item(admin)
    if topic == "admin.removed_from_workspace":
        item["team_ids"] = []
    envelope = build_notification(
        topic, item, app_id=sim.workspace.id_code, created_at=next(_created_at)
    )
    return str(envelope["id"]), encode_notification(envelope)


def post_webhook(url: str, body: bytes) -> httpx.Response:
    return httpx.post(
        f"{url}/webhooks/intercom", content=body, headers=signed_headers(body), timeout=10
    )


@dataclass
class DeliveryLog:
    """What a sender saw, per notification id: every answer (or connection failure)."""

    answers: dict[str, list[str]] = field(default_factory=dict)
    accepted_by: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, notification_id: str, answer: str, url: str | None = None) -> None:
        with self.lock:
            self.answers.setdefault(notification_id, []).append(answer)
            if url is not None and answer == "200 accepted":
                self.accepted_by[url] = self.accepted_by.get(url, 0) + 1

    def accepted(self, url: str) -> int:
        with self.lock:
            return self.accepted_by.get(url, 0)

    def refused(self) -> int:
        with self.lock:
            return sum(
                1 for answers in self.answers.values() for a in answers if not a.startswith("200")
            )

    def delivered(self) -> set[str]:
        """Ids some replica answered 200 for (a delivery stored by a replica whose answer was
        lost, then retried elsewhere, is answered `duplicate` there)."""
        with self.lock:
            return {
                nid
                for nid, answers in self.answers.items()
                if any(answer.startswith("200") for answer in answers)
            }


def deliver_like_intercom(
    urls: list[str], notification_id: str, body: bytes, log: DeliveryLog, *, first: int
) -> None:
    """POST until a replica answers 200, moving on to the next replica after a failure, the
    way Intercom retries a delivery that was refused or timed out."""
    for attempt in range(200):
        url = urls[(first + attempt) % len(urls)]
        try:
            response = post_webhook(url, body)
        except httpx.HTTPError as exc:
            log.record(notification_id, f"error {type(exc).__name__}", url)
        else:
            status = response.json().get("status") if response.status_code == 200 else None
            log.record(notification_id, f"{response.status_code} {status or response.text}", url)
            if response.status_code == 200:
                return
        time.sleep(0.05)
    raise AssertionError(f"no replica ever accepted {notification_id}")


def all_runs(replica: Replica) -> list[dict[str, Any]]:
    with operator(replica) as client:
        response = client.get("/sync-runs", params={"limit": 1000})
    assert response.status_code == 200, response.text
    runs: list[dict[str, Any]] = response.json()["items"]
    return runs


def inbox_events(replica: Replica) -> list[dict[str, Any]]:
    with operator(replica) as client:
        response = client.get("/webhook-events", params={"limit": 1000})
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["items"]
    return events


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def wait_until_settled(replica: Replica, timeout: float = 60) -> None:
    """No run queued or running, and nothing left in the inbox to apply."""

    def settled() -> bool:
        runs = all_runs(replica)
        events = inbox_events(replica)
        return all(run["finished_at"] for run in runs) and all(
            event["outcome"] != "pending" for event in events
        )

    wait_for(settled, timeout=timeout, interval=0.2, what="runs and the inbox to settle")


def assert_runs_never_overlap(runs: list[dict[str, Any]]) -> None:
    spans = sorted(
        (parse_time(run["started_at"] or run["finished_at"]), parse_time(run["finished_at"]), run)
        for run in runs
    )
    for (_, end, run), (start, _, following) in itertools.pairwise(spans):
        assert end <= start, f"runs overlap: {run} and {following}"


def assert_applied_exactly_once(
    events: list[dict[str, Any]], log: DeliveryLog, *, topics: set[str] | None = None
) -> None:
    """Every notification some replica answered 200 for is stored once, applied once."""
    stored: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        if topics is None or event["topic"] in topics:
            stored.setdefault(event["id"], []).append(event)
    delivered = log.delivered()
    assert set(stored) == delivered, "the inbox and the accepted deliveries differ"
    for notification_id, rows in stored.items():
        assert len(rows) == 1, f"{notification_id} stored {len(rows)} times"
        (row,) = rows
        assert row["outcome"] == "applied", row
        assert row["attempts"] == 1, f"{notification_id} was applied {row['attempts']} times"
        assert row["applied_at"] is not None, row
        answers = log.answers[notification_id]
        # Every 200 the sender saw is a delivery the inbox counted (duplicates included); it
        # may count more (a stored delivery whose answer never arrived), never more than sent.
        answered = sum(1 for answer in answers if answer.startswith("200"))
        assert answered <= row["deliveries"] <= len(answers), (row, answers)


def change_log(replica: Replica) -> list[dict[str, Any]]:
    """The whole change feed, from the first version."""
    changes: list[dict[str, Any]] = []
    since = 0
    with replica.client() as client:
        while True:
            response = client.get("/api/v1/changes", params={"since": since, "limit": 1000})
            assert response.status_code == 200, response.text
            page = response.json()
            changes.extend(page["changes"])
            if not page["changes"]:
                return changes
            since = page["next_since"]


def assert_replicas_serve_the_truth(replicas: list[Replica], sim: SimulatorServer) -> None:
    """Every replica serves the same version, ETag and bytes, and that is the simulator's state."""
    answers = []
    for replica in replicas:
        with replica.client() as client:
            response = client.get("/api/v1/snapshot")
            assert response.status_code == 200, response.text
            answers.append((response.headers["etag"], response.content, snapshot(client)))
    etags = {etag for etag, _, _ in answers}
    assert len(etags) == 1, f"replicas disagree on the ETag: {etags}"
    assert len({content for _, content, _ in answers}) == 1, "replicas serve different bytes"
    body = answers[0][2]
    assert etags == {f'"v{body["version"]}"'}
    assert served_truth(body) == simulator_truth(sim)


# ----- tests ----------------------------------------------------------------------------------


def test_two_replicas_run_one_sync_at_a_time_reconcile_once_per_period_apply_events_once(
    start_replicas: ReplicaFactory, sim: SimulatorServer
) -> None:
    """Both replicas take webhooks and operator resyncs while their reconcile schedules run
    (every second, so several periods pass during the test)."""
    interval = 1.0
    replica_a, replica_b = start_replicas(
        2, reconcile_interval_seconds=interval, reconcile_allow_short_interval=True
    )
    urls = [replica_a.url, replica_b.url]
    log = DeliveryLog()

    # A stream of changes, delivered alternately to each replica: teammates joining, one
    # leaving, away-mode changes; the simulator changes first, as Intercom's state would.
    admins = sorted(sim.workspace.admins.values(), key=lambda a: a.id)
    leaving = admins[0]
    changes: list[tuple[str, SimAdmin]] = []
    for number in range(16):
        changes.append(("admin.added_to_workspace", new_admin(sim, number)))
    for admin in admins[1:9]:
        away = admin.copy()
        away.away_mode_enabled = not away.away_mode_enabled
        changes.append(("admin.away_mode_updated", sim.workspace.upsert_admin(away)))
    sim.workspace.remove_admin(leaving.id)
    changes.append(("admin.removed_from_workspace", leaving))

    # Operators press resync on both replicas at once while the stream flows; the next run's
    # team fetch is slowed down so that presses find it running.
    sim.add_fault(path="/teams", delay_seconds=1.5, times=1)
    barrier = threading.Barrier(2)
    resyncs: list[dict[str, Any]] = []

    def resync(replica: ServiceProcess) -> None:
        barrier.wait(10)
        with operator(replica) as client:
            response = client.post("/resync")
        assert response.status_code == 202, response.text
        resyncs.append(response.json())

    pressers = [threading.Thread(target=resync, args=(r,)) for r in (replica_a, replica_b)]
    for presser in pressers:
        presser.start()
    sent: list[tuple[str, bytes]] = []
    for index, (topic, admin) in enumerate(changes):
        notification_id, body = notification(sim, topic, admin)
        sent.append((notification_id, body))
        deliver_like_intercom(urls, notification_id, body, log, first=index)
    for presser in pressers:
        presser.join(30)
    assert len(resyncs) == 2

    # Intercom resends one delivery, to the other replica: acknowledged as a duplicate.
    notification_id, body = sent[3]
    response = post_webhook(urls[(3 + 1) % 2], body)
    assert response.json() == {"status": "duplicate"}
    log.record(notification_id, "200 duplicate")

    def reconciles() -> bool:
        return len([run for run in all_runs(replica_a) if run["trigger"] == "schedule"]) >= 3

    wait_for(reconciles, timeout=90, interval=0.5, what="three scheduled reconciles")
    wait_until_settled(replica_b)

    # The schedule keeps firing: judge the runs that have finished.
    runs = [run for run in all_runs(replica_a) if run["finished_at"]]
    assert_runs_never_overlap(runs)
    assert [run for run in runs if run["status"] != "succeeded"] == []
    # Each press was answered with a run that really ran (the one already going on, or one
    # it queued), and, above, no two runs ever overlapped.
    assert {pressed["id"] for pressed in resyncs} <= {run["id"] for run in runs}

    # A reconcile is queued only once a full period has passed since the last sync finished,
    # whichever replica checks: two replicas firing in one period would start two reconciles
    # less than a period apart.
    reconcile_starts = sorted(
        parse_time(run["started_at"]) for run in runs if run["trigger"] == "schedule"
    )
    # (A period is the interval less up to RECONCILE_JITTER, never less.)
    shortest_period = interval * (1 - RECONCILE_JITTER)
    for earlier, later in itertools.pairwise(reconcile_starts):
        gap = (later - earlier).total_seconds()
        assert gap >= shortest_period, f"two reconciles {gap:.3f}s apart"

    events = inbox_events(replica_a)
    assert inbox_events(replica_b) == events
    assert_applied_exactly_once(events, log)
    assert len(events) == len(changes)
    # The change log agrees: each joiner appeared once, whichever of a webhook or a reconcile
    # saw it first, and the reconciles that followed never flipped it back and forth; the
    # leaver was never upserted again once deleted. (Its tombstone may be recorded twice:
    # the reconcile's removal, then the webhook's later removal time.)
    user_log = [
        (change["resource_id"], change["op"])
        for change in change_log(replica_b)
        if change["resource_type"] == "user"
    ]
    user_changes = collections.Counter(user_log)
    for topic, admin in changes:
        if topic == "admin.added_to_workspace":
            assert user_changes[(admin.id, "upsert")] == 1, admin.id
            assert user_changes[(admin.id, "delete")] == 0, admin.id
    leaver_log = [op for resource_id, op in user_log if resource_id == leaving.id]
    first_delete = leaver_log.index("delete")
    assert "upsert" not in leaver_log[first_delete:], leaver_log
    assert_replicas_serve_the_truth([replica_a, replica_b], sim)
    with replica_b.client() as client:
        users = {user["id"]: user for user in snapshot(client, include_removed="true")["users"]}
    assert users[leaving.id]["status"] == "deleted"
    for topic, admin in changes:
        if topic == "admin.away_mode_updated":
            assert users[admin.id]["profile"]["away_mode_enabled"] is admin.away_mode_enabled


def test_a_replica_killed_mid_sync_frees_the_slot_at_once_not_after_the_lease(
    start_replicas: ReplicaFactory,
    start_service: Callable[..., ServiceServer],
    sim: SimulatorServer,
) -> None:
    """The process running a sync holds the run lock (a PostgreSQL advisory lock on its own
    connection, or a file lock beside the SQLite store); when it dies the lock goes with it,
    and the next request sees the run abandoned right away rather than after the 60 s
    heartbeat lease."""
    (replica_a,) = start_replicas(1)
    replica_b = start_service()  # the second replica, served from this test's process
    sim.add_fault(path="/admins", delay_seconds=8, times=1)
    admins_calls = len(sim.requests("/admins"))
    with operator(replica_a) as client:
        stuck = client.post("/resync").json()
    wait_for(
        lambda: len(sim.requests("/admins")) > admins_calls,
        timeout=30,
        what="replica A's run to be fetching",
    )
    replica_a.kill()

    def fresh_run() -> dict[str, Any] | None:
        with operator(replica_b) as client:
            run: dict[str, Any] = client.post("/resync").json()
        return run if run["id"] != stuck["id"] else None

    # Half the lease: only the lock can explain a release this early.
    replacement = wait_for(fresh_run, timeout=30, interval=0.2, what="a new run on replica B")
    wait_until_settled(replica_b)
    runs = {run["id"]: run for run in all_runs(replica_b)}
    assert runs[stuck["id"]]["status"] == "failed"
    assert runs[stuck["id"]]["error"]["code"] == "run_abandoned"
    assert runs[replacement["id"]]["status"] == "succeeded"
    assert_runs_never_overlap(list(runs.values()))
    assert_replicas_serve_the_truth([replica_b], sim)
