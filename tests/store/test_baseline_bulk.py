"""A first baseline into an empty store loads in bulk: rows straight through the driver (COPY on
PostgreSQL), and the membership table's upkeep suspended during the insert (SQLite: its user_id
index; PostgreSQL: its foreign keys) and restored in the same transaction. The result, the
schema and the change log must be exactly what the row-by-row path leaves, a failure must leave
nothing behind, and an open reader must not make the load wait or deadlock. The directory a
baseline diffs against is read the same fast way and must hold the same values."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from app.intercom.models import IntercomAdmin, IntercomTeam, IntercomWorkspace
from app.store import directory
from app.store.engine import Database
from app.store.models import ChangeLogEntry, Membership, User, utcnow
from app.store.versioning import ChangeSet, changes_since, lock_store_state, record_changes
from app.store.workset import TeammateWorkset
from app.sync.baseline import FetchedWorkspace, apply_baseline
from tests.store.test_migrations import schema_differences


@pytest.fixture
def bulk_from_one_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """Take the bulk path for the small workspaces of these tests."""
    monkeypatch.setattr(directory, "BULK_LOAD_MIN_ROWS", 1)


def workspace(n_admins: int = 40, n_teams: int = 6) -> FetchedWorkspace:
    admin_ids = [str(5000 + i) for i in range(n_admins)]
    team_ids = [str(70 + t) for t in range(n_teams)]
    # Memberships from both sides: teams list some members, teammates list other teams.
    admins = [
        IntercomAdmin(
            id=uid,
            name=f"Teammate {uid}",
            email=f"t{uid}@acme.example",
            has_inbox_seat=i % 2 == 0,
            team_ids=[team_ids[i % n_teams]],
        )
        for i, uid in enumerate(admin_ids)
    ]
    teams = [
        IntercomTeam(
            id=tid,
            name=f"Team {tid}",
            admin_ids=admin_ids[(t + 1) % n_teams :: n_teams][:3] + ["999"],
        )
        for t, tid in enumerate(team_ids)
    ]
    return FetchedWorkspace(
        workspace=IntercomWorkspace(id_code="ws1", name="Acme", region="US"),
        admins=admins,
        teams=teams,
        fetch_started_at=utcnow(),
        roles_supported=False,
    )


def stored(db: Database) -> dict[str, Any]:
    with db.reading() as session:
        return {
            "user_rows": [
                tuple(row)
                for row in session.execute(
                    select(*directory.STORED_USER_COLUMNS, User.updated_version).order_by(User.id)
                )
            ],
            "memberships": sorted(
                tuple(row)
                for row in session.execute(select(Membership.team_id, Membership.user_id))
            ),
            "log": [
                (row.version, row.resource_type, row.resource_id, row.op)
                for row in session.execute(
                    select(ChangeLogEntry).order_by(ChangeLogEntry.id)
                ).scalars()
            ],
        }


def insert_membership(db: Database, team_id: str, user_id: str) -> None:
    with db.writing() as session:
        session.execute(
            text("INSERT INTO membership (team_id, user_id) VALUES (:t, :u)"),
            {"t": team_id, "u": user_id},
        )


def test_a_bulk_first_baseline_leaves_what_the_checked_insert_leaves(
    database_url: str, store: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetched = workspace()
    monkeypatch.setattr(directory, "BULK_LOAD_MIN_ROWS", 10**9)
    with store.writing() as session:
        apply_baseline(session, fetched)
    row_by_row = stored(store)
    with store.writing() as session:
        session.execute(text("DELETE FROM membership"))
        session.execute(text("DELETE FROM change_log"))
        session.execute(text('DELETE FROM "user"'))
        session.execute(text("DELETE FROM team"))
        # As a new store's: no version, no workspace named yet.
        session.execute(
            text(
                "UPDATE store_state SET version = 0, workspace_id = NULL, "
                "workspace_name = NULL, workspace_region = NULL"
            )
        )

    monkeypatch.setattr(directory, "BULK_LOAD_MIN_ROWS", 1)
    with store.writing() as session:
        result = apply_baseline(session, fetched)
    assert result.stats.memberships_added == len(row_by_row["memberships"]) > 40
    assert stored(store) == row_by_row
    # The index and the foreign keys are back, exactly as the migrations made them...
    assert schema_differences(database_url) == []
    # ...and the foreign keys are enforced again.
    with pytest.raises(IntegrityError):
        insert_membership(store, "70", "nobody")


def test_a_failed_bulk_baseline_leaves_the_store_and_its_schema_as_they_were(
    database_url: str, store: Database, bulk_from_one_row: None
) -> None:
    class Failure(Exception):
        pass

    def fail_after_applying() -> None:
        with store.writing() as session:
            apply_baseline(session, workspace())
            raise Failure

    with pytest.raises(Failure):
        fail_after_applying()
    assert stored(store) == {"user_rows": [], "memberships": [], "log": []}
    assert schema_differences(database_url) == []


def test_an_open_reader_does_not_hold_up_a_bulk_baseline(
    database_url: str, store: Database, bulk_from_one_row: None
) -> None:
    """On PostgreSQL the bulk path needs exclusive locks; a reader already in the tables makes
    it fall back to the row-by-row checks instead of waiting (which could deadlock)."""
    outcome: list[object] = []

    def run_baseline() -> None:
        try:
            with store.writing() as session:
                outcome.append(apply_baseline(session, workspace()))
        except Exception as exc:  # reported through `outcome`
            outcome.append(exc)

    with store.reading() as reader:
        assert reader.execute(select(User.id).limit(1)).all() == []
        worker = threading.Thread(target=run_baseline)
        worker.start()
        worker.join(timeout=120)  # a hang guard, not a time limit: it ends in ~1 s or never
        assert not worker.is_alive(), "the baseline waited for the reader"
        assert reader.execute(select(Membership.user_id).limit(1)).all() == []
    assert len(outcome) == 1
    assert not isinstance(outcome[0], Exception), outcome
    assert stored(store)["memberships"]
    assert schema_differences(database_url) == []


def test_the_change_log_gets_one_row_per_change_in_type_then_id_order(store: Database) -> None:
    """record_changes writes through the driver (COPY on PostgreSQL), with `at` bound once: the
    rows must read back with the version, the ops and the timestamp exactly."""
    changes = ChangeSet()
    for i in (3, 1, 2):
        changes.upsert("user", f"u{i}")
        changes.delete("grant", f"team:t{i}:member:user:u{i}")
    changes.upsert_many("team", ["t2", "t1"])
    changes.upsert("role", "r1")
    at = utcnow()

    with store.writing() as session:
        state = lock_store_state(session)
        before = state.version
        version = record_changes(session, state, changes, at=at)
    with store.reading() as session:
        rows = changes_since(session, since=before, limit=100)

    assert version == before + 1
    grants = [("grant", f"team:t{i}:member:user:u{i}", "delete") for i in (1, 2, 3)]
    expected = [
        *grants,
        ("role", "r1", "upsert"),
        ("team", "t1", "upsert"),
        ("team", "t2", "upsert"),
        *[("user", f"u{i}", "upsert") for i in (1, 2, 3)],
    ]
    assert [(r.version, r.resource_type, r.resource_id, r.op, r.at) for r in rows] == [
        (version, *entry, at) for entry in expected
    ]


def test_the_directory_a_baseline_diffs_against_reads_teammates_as_the_applier_does(
    store: Database,
) -> None:
    """load_directory reads the driver's tuples and processes them itself; the values (bools,
    UTC datetimes, NULLs) must be exactly what the ordinary query path (the webhook applier's
    workset) returns."""
    with store.writing() as session:
        apply_baseline(session, workspace())
        when = utcnow()
        writes = TeammateWorkset(session)
        writes.update_user(
            "5001", {"removed_at": when, "event_applied_at": when, "last_login_at": when}
        )
        writes.update_user("5002", {"event_watermark": 42, "away_watermark": 7})
        writes.flush()
    with store.reading() as session:
        loaded = directory.load_directory(session)
        reads = TeammateWorkset(session)
        assert len(loaded.users) == 40
        for user_id, user in loaded.users.items():
            assert user == reads.get_user(user_id)
        assert loaded.users["5001"].removed_at == when
        assert loaded.users["5002"].event_watermark == 42
        assert loaded.users["5000"].fields["has_inbox_seat"] is True
