"""Webhook traffic that stays consistent with the simulator's workspace, and the probes the
suites read the outcome with: runs, raw snapshots, the change feed, the inbox as stored, logs."""

from __future__ import annotations

import itertools
import random
import re
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import Executable, select

from app.simulator import (
    SimAdmin,
    SimulatorServer,
    activity_log_item,
    admin_webhook_item,
    build_notification,
    encode_notification,
)
from app.store.engine import create_database
from app.store.inbox import InboxStatus
from app.store.models import ChangeLogEntry, WebhookEvent
from harness.databases import database_server, fresh_database
from harness.service import OPERATOR_TOKEN, READ_TOKEN, signed_headers
from harness.waiting import wait_for

FINISHED = ("succeeded", "failed", "blocked")
# uvicorn closes a connection idle for 5 s; a client reusing it at that moment gets "Server
# disconnected". Dropping idle connections sooner on our side avoids racing that close.
KEEPALIVE = httpx.Limits(keepalive_expiry=2.0)


# ----- runs and readiness ------------------------------------------------------------------------


def operator(url: str) -> httpx.Client:
    auth = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    return httpx.Client(base_url=url, headers=auth, timeout=30, limits=KEEPALIVE)


def reader(url: str) -> httpx.Client:
    auth = {"Authorization": f"Bearer {READ_TOKEN}"}
    return httpx.Client(base_url=url, headers=auth, timeout=30, limits=KEEPALIVE)


def webhook_client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=30, limits=KEEPALIVE)


def wait_run(op: httpx.Client, run_id: int, *, timeout: float = 60) -> dict[str, Any]:
    """The run once it has finished (succeeded, failed or blocked)."""

    def finished() -> dict[str, Any] | None:
        response = op.get(f"/sync-runs/{run_id}")
        assert response.status_code == 200, response.text
        run: dict[str, Any] = response.json()
        return run if run["status"] in FINISHED else None

    return wait_for(finished, timeout=timeout, interval=0.05, what=f"sync run {run_id} to finish")


def resync(op: httpx.Client, *, force: bool = False, timeout: float = 60) -> dict[str, Any]:
    """Run a fresh baseline to its end: one that fetches after this call. A queued run has not
    fetched yet; a running one may have, so wait for it and ask again."""
    deadline = time.monotonic() + timeout
    while True:
        response = op.post("/resync", params={"force": "true"} if force else None)
        assert response.status_code == 202, response.text
        run: dict[str, Any] = response.json()
        if run["status"] == "queued":
            return wait_run(op, run["id"], timeout=max(1.0, deadline - time.monotonic()))
        wait_run(op, run["id"], timeout=max(1.0, deadline - time.monotonic()))
        assert time.monotonic() < deadline, "could not start a fresh sync run"


def readiness(url: str) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"{url}/readyz", timeout=10)
    body: dict[str, Any] = response.json()
    return response.status_code, body


def wait_inbox_drained(url: str, *, timeout: float = 60) -> dict[str, Any]:
    """Readiness once nothing is pending in the inbox."""

    def drained() -> dict[str, Any] | None:
        status, body = readiness(url)
        return body if status == 200 and body["inbox_backlog"] == 0 else None

    return wait_for(drained, timeout=timeout, interval=0.1, what="the inbox to drain")


# ----- what is served ----------------------------------------------------------------------------


def raw_snapshot(client: httpx.Client, **params: Any) -> tuple[str, bytes]:
    """(ETag, exact body bytes) of the snapshot, uncompressed."""
    response = client.get(
        "/api/v1/snapshot", params=params, headers={"Accept-Encoding": "identity"}
    )
    assert response.status_code == 200, response.text
    assert "content-encoding" not in response.headers
    return response.headers["etag"], response.content


def assert_consistent(body: dict[str, Any]) -> None:
    """One consistent read: every member and grant principal is a listed user, both sides of
    every membership agree, every active teammate and no one else holds the workspace's
    `member` grant, and ids are strings."""
    users = {user["id"]: user for user in body["users"]}
    for user_id, user in users.items():
        assert isinstance(user_id, str)
        for team_id in user["team_ids"]:
            assert isinstance(team_id, str)
    team_members: set[tuple[str, str]] = set()
    for team in body["teams"]:
        for member in team["member_ids"]:
            assert member in users, f"team {team['id']} lists {member}, who is not a listed user"
            team_members.add((team["id"], member))
    user_teams = {(team_id, uid) for uid, user in users.items() for team_id in user["team_ids"]}
    assert team_members == user_teams, "the two sides of the team memberships disagree"
    for grant in body["grants"]:
        assert grant["principal"]["resource_id"] in users, grant
    member = f"workspace:{body['workspace']['id']}:member"
    holders = {
        g["principal"]["resource_id"] for g in body["grants"] if g["entitlement_id"] == member
    }
    assert holders == {uid for uid, user in users.items() if user["status"] == "enabled"}


def change_versions(client: httpx.Client) -> tuple[list[int], int]:
    """Every version in the change feed from the start, in feed order, and the store version."""
    versions: list[int] = []
    since = 0
    while True:
        response = client.get("/api/v1/changes", params={"since": since, "limit": 10000})
        assert response.status_code == 200, response.text
        page = response.json()
        versions.extend(change["version"] for change in page["changes"])
        if not page["changes"]:
            return versions, int(page["version"])
        since = page["next_since"]


def assert_versions_gap_free(client: httpx.Client) -> int:
    """Versions in the change log are monotonic and every one from 1 to the store version
    appears; returns the store version."""
    versions, current = change_versions(client)
    assert versions == sorted(versions), "the change feed is not in version order"
    assert versions, "the change feed is empty"
    missing = sorted(set(range(1, current + 1)) - set(versions))
    assert not missing, f"versions missing from the change log: {missing[:20]}"
    assert versions[-1] == current
    return current


# ----- the store as written ----------------------------------------------------------------------


@dataclass(frozen=True)
class InboxRow:
    notification_id: str | None
    status: str
    attempts: int
    deliveries: int
    topic: str | None


def read_rows(database_url: str, query: Executable) -> list[Any]:
    """The rows of `query`, read straight from the database on a connection of its own."""
    db = create_database(database_url, pool_size=1)
    try:
        with db.reading() as session:
            return list(session.execute(query).all())
    finally:
        db.dispose()


def inbox_rows(database_url: str) -> list[InboxRow]:
    """Every inbox row, read straight from the database."""
    query = select(
        WebhookEvent.notification_id,
        WebhookEvent.status,
        WebhookEvent.attempts,
        WebhookEvent.deliveries,
        WebhookEvent.topic,
    ).order_by(WebhookEvent.id)
    return [InboxRow(*row) for row in read_rows(database_url, query)]


def change_log(database_url: str) -> list[tuple[int, str, str, str]]:
    """(version, resource type, resource id, op) of every change-log row."""
    query = select(
        ChangeLogEntry.version,
        ChangeLogEntry.resource_type,
        ChangeLogEntry.resource_id,
        ChangeLogEntry.op,
    ).order_by(ChangeLogEntry.id)
    return [(int(v), t, i, o) for v, t, i, o in read_rows(database_url, query)]


@contextmanager
def another_database(tmp_path: Path, name: str) -> Iterator[str]:
    """A second empty database beside the test's own (a SQLite file, or a new PostgreSQL
    database on the TEST_DATABASE_URL server), dropped afterwards."""
    with fresh_database(database_server(), tmp_path, name=name, prefix=f"t_{name}") as url:
        yield url


def raw_deliveries(database_url: str) -> list[bytes]:
    """The raw bodies of every stored notification (not the rejected ones), in arrival order."""
    query = (
        select(WebhookEvent.raw_body)
        .where(WebhookEvent.status != InboxStatus.REJECTED)
        .order_by(WebhookEvent.id)
    )
    return [body for (body,) in read_rows(database_url, query)]


# ----- logs --------------------------------------------------------------------------------------

_LOCK_TROUBLE = re.compile(
    r"database is locked|deadlock detected|could not serialize|lock timeout", re.IGNORECASE
)


def log_trouble(path: Path) -> list[str]:
    """Log lines that report lock trouble, or anything at error level or worse."""
    trouble = []
    for line in path.read_text(errors="replace").splitlines():
        if _LOCK_TROUBLE.search(line):
            trouble.append(line)
            continue
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            if "Traceback" in line:
                trouble.append(line)
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "critical"):
            trouble.append(line)
    return trouble


# ----- webhook traffic consistent with the simulator ---------------------------------------------


@dataclass
class Delivery:
    """One notification: the exact signed bytes, and what became of sending them."""

    notification_id: str
    topic: str
    admin_id: str
    body: bytes
    statuses: list[int | None] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)

    @property
    def acked(self) -> bool:
        return 200 in self.statuses


class Workload:
    """Changes the simulator's workspace and builds the notification Intercom would send for
    each change, so that the workspace stays the ground truth the store must converge to.

    Every notification gets a `created_at` one second after the previous one, so each
    teammate's notifications are strictly ordered by the time Intercom would give them."""

    def __init__(self, sim: SimulatorServer, *, seed: int, first_id: int = 880_000_000) -> None:
        self.sim = sim
        self.rng = random.Random(seed)
        self._ids = itertools.count(first_id)
        self._clock = itertools.count(int(time.time()) - 200_000)
        self._notifications = itertools.count(1)
        self._lock = threading.Lock()
        with sim.workspace.lock:
            self.team_ids = list(sim.workspace.teams)
            self.app_id = sim.workspace.id_code

    def _envelope(self, topic: str, item: dict[str, Any], admin_id: str) -> Delivery:
        with self._lock:
            created_at = next(self._clock)
            notification_id = f"notif_rel_{next(self._notifications):06d}_{self.rng.random():.6f}"
        envelope = build_notification(
            topic,
            item,
            app_id=self.app_id,
            created_at=created_at,
            notification_id=notification_id,
        )
        return Delivery(notification_id, topic, admin_id, orjson.dumps(envelope))

    def new_admin_id(self) -> str:
        with self._lock:
            return str(next(self._ids))

    def add(self, admin_id: str, rng: random.Random) -> Delivery:
        """A teammate joins (or re-joins) the workspace, in one to three teams."""
        teams = rng.sample(self.team_ids, rng.randint(1, min(3, len(self.team_ids))))
        admin = SimAdmin(
            id=admin_id,
            name=f"Teammate {admin_id}",
            email=f"t{admin_id}@acme.example",
            job_title=rng.choice([None, "Support Engineer", "Billing Specialist"]),
            has_inbox_seat=rng.random() < 0.8,
            team_ids=teams,
        )
        stored = self.sim.workspace.upsert_admin(admin)
        return self._envelope("admin.added_to_workspace", admin_webhook_item(stored), admin_id)

    def remove(self, admin_id: str) -> Delivery:
        admin = self.sim.workspace.get_admin(admin_id)
        assert admin is not None, admin_id
        self.sim.workspace.remove_admin(admin_id)
        item = admin_webhook_item(admin)
        item["team_ids"] = []  # Intercom sends the removal with memberships already cleared
        return self._envelope("admin.removed_from_workspace", item, admin_id)

    def toggle_away(self, admin_id: str) -> Delivery:
        with self.sim.workspace.lock:
            admin = self.sim.workspace.admins[admin_id]
            admin.away_mode_enabled = not admin.away_mode_enabled
            admin.away_mode_reassign = admin.away_mode_enabled and self.rng.random() < 0.5
            copy = admin.copy()
        return self._envelope("admin.away_mode_updated", admin_webhook_item(copy), admin_id)

    def login(self, admin_id: str, *, logged_in: bool = True) -> Delivery:
        admin = self.sim.workspace.get_admin(admin_id)
        assert admin is not None, admin_id
        topic = "admin.logged_in" if logged_in else "admin.logged_out"
        return self._envelope(topic, admin_webhook_item(admin), admin_id)

    def activity(
        self, admin_id: str, activity_type: str = "app_team_membership_modification"
    ) -> Delivery:
        item = activity_log_item(activity_type, performed_by_id=admin_id)
        return self._envelope("admin.activity_log_event.created", item, admin_id)


_admin_event_clock = itertools.count(int(time.time()) - 3600)


def deliver_admin_event(url: str, sim: SimulatorServer, topic: str, admin: SimAdmin) -> str:
    """Sign and POST one `admin.*` notification about `admin` to the service at `url`, with
    a strictly increasing `created_at` (none is ignored as older than the last); its id."""
    item = admin_webhook_item(admin)
    if topic == "admin.removed_from_workspace":
        item["team_ids"] = []
    envelope = build_notification(
        topic, item, app_id=sim.workspace.id_code, created_at=next(_admin_event_clock)
    )
    body = encode_notification(envelope)
    response = httpx.post(
        f"{url}/webhooks/intercom", content=body, headers=signed_headers(body), timeout=10
    )
    assert response.json() == {"status": "accepted"}, response.text
    notification_id: str = envelope["id"]
    return notification_id


def post_delivery(client: httpx.Client, delivery: Delivery) -> int | None:
    """POST one delivery; records and returns the status (None when the connection failed)."""
    try:
        response = client.post(
            "/webhooks/intercom", content=delivery.body, headers=signed_headers(delivery.body)
        )
    except httpx.TransportError:
        delivery.statuses.append(None)
        return None
    delivery.statuses.append(response.status_code)
    if response.status_code == 200:
        delivery.answers.append(response.json()["status"])
    return response.status_code


def split(items: Iterable[Any], parts: int) -> list[list[Any]]:
    buckets: list[list[Any]] = [[] for _ in range(parts)]
    for index, item in enumerate(items):
        buckets[index % parts].append(item)
    return buckets
