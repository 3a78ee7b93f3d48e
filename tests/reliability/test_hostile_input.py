"""Hostile input: validly signed garbage and near-valid notifications never make the service
answer 500 or write half of anything, and the whole API, fuzzed from its own OpenAPI document
with valid tokens, never answers 500 or outside its documented schemas (reliability rules R1,
R4, R14, R15, R19)."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from app.intercom.notifications import HANDLED_TOPICS
from app.simulator import SimulatorServer, admin_webhook_item, build_notification
from app.store.engine import create_database
from app.store.models import ChangeLogEntry, Membership, StoreState, Team, User, WebhookEvent
from harness.service import OPERATOR_TOKEN, READ_TOKEN, ServiceServer, signed_headers, snapshot
from harness.waiting import wait_for
from harness.workload import (
    assert_consistent,
    inbox_rows,
    operator,
    read_rows,
    reader,
    webhook_client,
)

StartService = Callable[..., ServiceServer]
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass(frozen=True)
class StoreCounts:
    version: int
    users: int
    teams: int
    memberships: int
    change_log: int
    inbox: dict[str, int]


def store_counts(database_url: str) -> StoreCounts:
    db = create_database(database_url, pool_size=1)
    try:
        with db.reading() as session:

            def count(model: Any) -> int:
                return int(session.execute(select(func.count()).select_from(model)).scalar_one())

            inbox = session.execute(
                select(WebhookEvent.status, func.count()).group_by(WebhookEvent.status)
            ).all()
            return StoreCounts(
                version=int(session.execute(select(StoreState.version)).scalar_one()),
                users=count(User),
                teams=count(Team),
                memberships=count(Membership),
                change_log=count(ChangeLogEntry),
                inbox={status: int(n) for status, n in inbox},
            )
    finally:
        db.dispose()


def encode(value: Any) -> bytes:
    # The standard library writes integers past 64 bits and NaN/Infinity, both of which a
    # careless receiver could choke on; orjson refuses to.
    return json.dumps(value).encode()


def post_signed(client: httpx.Client, body: bytes) -> httpx.Response:
    response = client.post("/webhooks/intercom", content=body, headers=signed_headers(body))
    assert response.status_code != 500, response.text
    assert response.status_code in (200, 400), (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    answer = response.json()
    if response.status_code == 200:
        assert answer["status"] in ("accepted", "duplicate", "ignored"), answer
    else:
        assert answer["error"]["code"] == "invalid_notification", answer
    return response


def rejected_bodies(database_url: str) -> set[bytes]:
    query = select(WebhookEvent.raw_body).where(WebhookEvent.status == "rejected")
    return {body for (body,) in read_rows(database_url, query)}


def applied_teammates(database_url: str) -> set[str]:
    """Teammate ids named by the notifications that were applied."""
    db = create_database(database_url, pool_size=1)
    try:
        with db.reading() as session:
            return {
                item_id
                for item_id in session.execute(
                    select(WebhookEvent.item_id).where(WebhookEvent.status == "applied")
                ).scalars()
                if item_id is not None
            }
    finally:
        db.dispose()


def only_the_inbox_grew(database_url: str, before: StoreCounts, answers: Counter[int]) -> None:
    """Nothing but rejected inbox rows appeared: one per 400, each keeping its raw body."""
    after = store_counts(database_url)
    assert (after.version, after.users, after.teams, after.memberships, after.change_log) == (
        before.version,
        before.users,
        before.teams,
        before.memberships,
        before.change_log,
    )
    grown = {k: after.inbox.get(k, 0) - before.inbox.get(k, 0) for k in after.inbox}
    assert grown.get("rejected", 0) == answers[400], (grown, answers)
    assert grown.get("pending", 0) == 0, grown
    assert grown.get("applied", 0) == 0, grown


# ----- validly signed garbage --------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)


def test_signed_arbitrary_bytes_get_400_and_leave_only_a_rejected_inbox_row(
    service: ServiceServer, database_url: str
) -> None:
    before = store_counts(database_url)
    answers: Counter[int] = Counter()
    refused: set[bytes] = set()
    with webhook_client(service.url) as client:

        @FUZZ
        @given(st.binary(max_size=4096))
        def deliver(body: bytes) -> None:
            status = post_signed(client, body).status_code
            answers[status] += 1
            if status == 400:
                refused.add(body)

        deliver()
    assert answers[400] > 0
    only_the_inbox_grew(database_url, before, answers)
    # Kept byte for byte, for an operator (or a replay after a fix) to inspect.
    assert rejected_bodies(database_url) == refused
    print(f"FIGURE hostile/bytes: answers {dict(answers)}")


def header_value(raw: bytes) -> bytes:
    """`raw` cut to what a header value may carry (RFC 9110 field-value: tab, space, visible
    ASCII and obs-text 0x80-0xFF, no surrounding white space): the HTTP parsers refuse
    anything else before the app could see it."""
    return bytes(b for b in raw if b == 9 or 32 <= b != 127).strip()


SIGNATURE_VALUES = st.one_of(
    st.binary(max_size=80),
    st.binary(max_size=60).map(lambda raw: b"sha1=" + raw),
    st.text(alphabet="0123456789abcdefABCDEF", max_size=60).map(lambda h: f"sha1={h}".encode()),
    st.text(max_size=45).map(lambda text: ("sha1=" + text).encode("utf-8", "replace")),
).map(header_value)


def test_malformed_signature_headers_get_401_and_store_nothing(
    service: ServiceServer, sim: SimulatorServer, database_url: str
) -> None:
    """X-Hub-Signature is the first thing anyone can send: arbitrary bytes, non-ASCII, odd
    lengths and repeated headers (one of them perhaps the valid signature) are a 401."""
    admin = next(iter(sim.workspace.admins.values()))
    body = encode(build_notification("admin.logged_in", admin_webhook_item(admin), app_id="fuzz"))
    good = signed_headers(body)["X-Hub-Signature"].encode()
    before = store_counts(database_url)
    answers: Counter[int] = Counter()
    with webhook_client(service.url) as client:

        @FUZZ
        @given(
            st.lists(SIGNATURE_VALUES | st.just(good), min_size=1, max_size=3).filter(
                lambda values: values != [good]
            )
        )
        def deliver(values: list[bytes]) -> None:
            response = client.post(
                "/webhooks/intercom",
                content=body,
                headers=[(b"Content-Type", b"application/json")]
                + [(b"X-Hub-Signature", value) for value in values],
            )
            answers[response.status_code] += 1
            assert response.status_code == 401, (values, response.status_code, response.text)
            assert response.json()["error"]["code"] == "invalid_signature"

        deliver()
    after = store_counts(database_url)
    assert after == before
    print(f"FIGURE hostile/signatures: answers {dict(answers)}")


def test_signed_arbitrary_json_never_fails_and_changes_nothing_but_the_inbox(
    service: ServiceServer, database_url: str
) -> None:
    before = store_counts(database_url)
    answers: Counter[int] = Counter()
    with webhook_client(service.url) as client:

        @FUZZ
        @given(JSON_VALUES)
        def deliver(value: Any) -> None:
            answers[post_signed(client, encode(value)).status_code] += 1

        deliver()
    only_the_inbox_grew(database_url, before, answers)
    print(f"FIGURE hostile/json: answers {dict(answers)}")


@pytest.mark.parametrize(
    ("change", "status"),
    [
        # Past a 64-bit column but within what a JSON parser hands over: no usable time.
        ({"created_at": 2**63, "first_sent_at": 2**64 - 1}, 200),
        ({"created_at": 10**15}, 200),  # a year past 9999
        ({"topic": "admin." + "x" * 300}, 400),  # longer than the inbox keeps
        ({"app_id": "a" * 200}, 400),
        ({"id": "n" * 256}, 400),
    ],
)
def test_values_that_fit_no_column_are_answered_never_500(
    service: ServiceServer, sim: SimulatorServer, change: dict[str, Any], status: int
) -> None:
    admin = next(iter(sim.workspace.admins.values()))
    envelope = build_notification(
        "admin.logged_in", admin_webhook_item(admin), app_id=sim.workspace.id_code
    )
    body = encode({**envelope, **change})
    with webhook_client(service.url) as client:
        assert post_signed(client, body).status_code == status
        again = post_signed(client, body)
    assert again.status_code == status
    if status == 200:
        assert again.json() == {"status": "duplicate"}  # stored once, durably


# ----- near-valid notifications ------------------------------------------------------------------

ODD_IDS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=80),
    st.floats(),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
)
ODD_TEXT = st.one_of(st.none(), st.text(max_size=700), st.integers(), st.booleans(), JSON_VALUES)
ODD_BOOLS = st.one_of(st.booleans(), st.none(), st.integers(), st.text(max_size=5), JSON_VALUES)


# Stands for a notification id never sent before (Hypothesis repeats simple values often, and
# a repeated id is only a duplicate delivery).
FRESH_ID = "<fresh>"


def mostly(valid: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Nine times in ten a value Intercom would send, else a hostile one."""
    return st.integers(min_value=0, max_value=9).flatmap(lambda n: odd if n == 0 else valid)


def notifications(app_id: str, team_ids: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Envelopes shaped like Intercom's, each field usually plausible and sometimes hostile, so
    that plenty of them get applied. Teammate ids come mostly from a small pool, so adds,
    removals and updates of the same teammates interleave."""
    pool = st.integers(min_value=660_000_000, max_value=660_000_030)
    teammate_ids = mostly(st.one_of(pool, pool.map(str)), ODD_IDS)
    team_list = st.lists(
        mostly(st.one_of(st.sampled_from(team_ids), st.sampled_from(team_ids).map(int)), ODD_IDS),
        max_size=4,
    )
    item = st.fixed_dictionaries(
        {"id": teammate_ids},
        optional={
            "type": mostly(st.just("admin"), st.sampled_from(["team", "nonsense", ""])),
            "name": mostly(st.text(max_size=40), ODD_TEXT),
            "email": mostly(st.emails(), ODD_TEXT),
            "job_title": mostly(st.none() | st.text(max_size=40), ODD_TEXT),
            "away_mode_enabled": mostly(st.booleans(), ODD_BOOLS),
            "away_mode_reassign": mostly(st.booleans(), ODD_BOOLS),
            "has_inbox_seat": mostly(st.booleans(), ODD_BOOLS),
            "team_ids": mostly(team_list, ODD_TEXT),
            "avatar": st.one_of(st.text(max_size=20), JSON_VALUES),
            "role": st.one_of(JSON_VALUES, st.fixed_dictionaries({"id": ODD_IDS})),
            "activity_type": st.sampled_from(["app_team_creation", "admin_deletion", "other"]),
        },
    )
    admin_topics = sorted(HANDLED_TOPICS - {"admin.activity_log_event.created"})
    return st.fixed_dictionaries(
        {
            "topic": mostly(
                st.sampled_from(admin_topics),
                st.sampled_from(["ping", "admin.unknown", "admin.activity_log_event.created"])
                | st.text(max_size=20)
                | st.text(min_size=250, max_size=400),
            ),
            "id": mostly(st.just(FRESH_ID), ODD_IDS | st.text(min_size=250, max_size=300)),
            "data": mostly(st.fixed_dictionaries({"item": item}), JSON_VALUES),
            "type": mostly(st.just("notification_event"), st.text(max_size=10)),
            "app_id": mostly(st.just(app_id), ODD_IDS | st.text(min_size=120, max_size=200)),
            "created_at": mostly(
                st.integers(min_value=1_700_000_000, max_value=1_800_000_000),
                st.integers(min_value=-(2**64), max_value=2**64) | ODD_TEXT | st.floats(),
            ),
        },
        optional={"first_sent_at": st.one_of(st.integers(), ODD_TEXT)},
    )


def test_hostile_notifications_are_applied_whole_or_not_at_all(
    start_service: StartService, sim: SimulatorServer, database_url: str
) -> None:
    service = start_service(max_removal_fraction=1.0)
    with sim.workspace.lock:
        app_id, team_ids = sim.workspace.id_code, sorted(sim.workspace.teams)
        known = set(sim.workspace.admins)
    with reader(service.url) as client:
        first_version = snapshot(client)["version"]
    before = store_counts(database_url)
    answers: Counter[int] = Counter()
    fresh = itertools.count()
    with webhook_client(service.url) as client:

        @settings(FUZZ, max_examples=300)
        @given(notifications(app_id, team_ids))
        def deliver(envelope: dict[str, Any]) -> None:
            if envelope["id"] == FRESH_ID:
                envelope = {**envelope, "id": f"notif_fuzz_{next(fresh)}"}
            answers[post_signed(client, encode(envelope)).status_code] += 1

        deliver()
    assert answers[200] > 0, answers
    assert answers[400] > 0, answers

    def everything_looked_at() -> bool:
        # Events about teammates nobody knows wait with backoff; every event has been tried.
        rows = inbox_rows(database_url)
        return all(row.status != "pending" or row.attempts > 0 for row in rows)

    wait_for(everything_looked_at, timeout=60, interval=0.2, what="every event to be tried")
    rows = inbox_rows(database_url)
    assert not [row for row in rows if row.status == "failed"], "events failed to apply"

    rejected = store_counts(database_url).inbox.get("rejected", 0)
    # a notification created more than 5 minutes after its receipt is stored
    # `rejected` too, answered 200 with its id kept; the 400s are the rest.
    dated_ahead = rejected_as_dated_ahead(database_url)
    assert rejected - before.inbox.get("rejected", 0) == answers[400] + dated_ahead

    with reader(service.url) as client:
        assert_consistent(snapshot(client))
        everyone = snapshot(client, include_removed="true")
        changes = client.get("/api/v1/changes", params={"since": first_version, "limit": 10000})
        assert changes.status_code == 200, changes.text
    assert_consistent(everyone)
    named = applied_teammates(database_url)
    for user in everyone["users"]:
        # Nobody appears whom neither Intercom nor an applied notification named...
        assert user["id"] in known or user["id"] in named, user
        assert isinstance(user["display_name"], str), user
        assert isinstance(user["login"], str | None), user
        assert all(isinstance(flag, bool) for flag in user_flags(user)), user
    for change in changes.json()["changes"]:
        # ...and every change since the baseline is such a teammate or one of their grants.
        assert change["resource_type"] in ("user", "grant"), change
        assert change["resource_id"].rsplit(":", 1)[-1] in named, change
    outcomes = Counter(row.status for row in rows)
    print(f"FIGURE hostile/notifications: answers {dict(answers)}, inbox {dict(outcomes)}")


def rejected_as_dated_ahead(database_url: str) -> int:
    """Rejected notifications that name themselves: each must be dated past its receipt."""
    db = create_database(database_url, pool_size=1)
    try:
        with db.reading() as session:
            rows = session.execute(
                select(WebhookEvent.notification_created_at, WebhookEvent.received_at).where(
                    WebhookEvent.status == "rejected", WebhookEvent.notification_id.is_not(None)
                )
            ).all()
    finally:
        db.dispose()
    for created_at, received_at in rows:
        assert created_at is not None
        assert created_at > received_at.timestamp() + 300, (created_at, received_at)
    return len(rows)


def user_flags(user: dict[str, Any]) -> list[Any]:
    profile = user["profile"]
    return [profile[k] for k in ("has_inbox_seat", "away_mode_enabled", "away_mode_reassign")]


# ----- the whole API, fuzzed from its OpenAPI document -------------------------------------------

BOTH_TOKEN = "test-read-and-operator-token-0123456789"
# Cursors are opaque tokens the server issued: schema-valid strings it never issued are rightly
# 400 `invalid_cursor`, and `since` ahead of the store is rightly 410. "Schema-valid data is
# accepted" cannot hold for either, so that one check does not apply here.
NOT_APPLICABLE_CHECKS = ["positive_data_acceptance"]


def schemathesis_cli() -> list[str]:
    beside = Path(sys.executable).with_name("schemathesis")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("schemathesis")
    assert found, "schemathesis is not installed"
    return [found]


def test_schemathesis_finds_no_server_errors_and_no_schema_violations(
    start_service: StartService, tmp_path: Path
) -> None:
    service = start_service(
        read_api_tokens=f"{READ_TOKEN},{BOTH_TOKEN}",
        operator_api_tokens=f"{OPERATOR_TOKEN},{BOTH_TOKEN}",
    )
    with operator(service.url) as op:
        # Found by this fuzzing on PostgreSQL: run ids past 32 bits were a 500.
        for run_id in (-1, 0, 2**31, 2**63, 10**30):
            assert op.get(f"/sync-runs/{run_id}").status_code == 404
    command = [
        *schemathesis_cli(),
        "run",
        f"{service.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {BOTH_TOKEN}",
        "--checks",
        "all",
        "--exclude-checks",
        ",".join(NOT_APPLICABLE_CHECKS),
        "--max-examples",
        "10",
        "--seed",
        "20261130",
        "--no-color",
        "--request-timeout",
        "30",
        "--generation-database",
        "none",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    generated = [line.strip() for line in result.stdout.splitlines() if "generated" in line]
    print(f"FIGURE hostile/schemathesis: {generated[-1] if generated else '?'}")
