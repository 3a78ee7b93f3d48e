"""The benchmarks' own code path, so that `make bench` and `make bench-quick` cannot rot.

`python -m bench --smoke` runs exactly what `--quick` runs (service processes, the load
generator, the reference routes, markers, the in-process apply and rebuild timings) at tiny
sizes. Nothing here asserts a time: only that every area ran, produced its figures, and found
nothing functionally broken (error answers, a version bump on a no-change re-sync, a marker
teammate that never appeared, an undrained inbox, ...).
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
import pytest

from app.snapshot.reference import build_snapshot
from app.snapshot.splice import SnapshotMemo, serialize_snapshot
from app.store.reads import SnapshotRows
from app.store.versioning import StoreHeader
from bench.__main__ import main
from harness.databases import database_server

# A figure of each kind every area must report (substrings of the figure names).
EXPECTED = {
    "sync": [
        "baseline end to end",
        "store apply, empty store",
        "no-change re-sync end to end",
        "server peak RSS",
        "growth",
    ],
    "snapshot": [
        "cached 200 (gzip): requests/s",
        "304 Not Modified: requests/s",
        "rebuild after a change",
    ],
    "webhooks": [
        "intake: signed deliveries/s",
        "receipt -> visible",
        "apply: events/s",
        "RSS after",
    ],
    "provisioning": [
        "removal (40 teammates): sent -> visible in snapshot, p95",
        "team add (40 teammates): sent -> visible in snapshot, p95",
        "team removal (40 teammates): sent -> visible in snapshot, p95",
        "removal dry run (40 teammates): Intercom calls in all",
        "removal replayed (same Idempotency-Key) (40 teammates): Intercom calls in all",
    ],
}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict[str, Any]]:
    """One `--smoke` pass over every area, shared by the tests that read its report."""
    output = tmp_path_factory.mktemp("bench") / "latest.json"
    args = ["--smoke", "--output", str(output)]
    if postgres_url := database_server():
        args += ["--postgres", postgres_url, "--no-sqlite"]
    code = main(args)
    report: dict[str, Any] = json.loads(output.read_text())
    return code, report


@pytest.mark.slow  # every benchmark area against service processes
def test_the_benchmark_suite_runs_every_area_without_a_functional_failure(
    smoke_run: tuple[int, dict[str, Any]],
) -> None:
    code, report = smoke_run
    assert report["functional_failures"] == []
    assert code == 0
    assert report["mode"] == "smoke"
    by_area: dict[str, list[dict[str, object]]] = {}
    for figure in report["figures"]:
        by_area.setdefault(str(figure["area"]), []).append(figure)
    for area, wanted in EXPECTED.items():
        names = [str(f["name"]) for f in by_area.get(area, [])]
        for fragment in wanted:
            assert any(fragment in name for name in names), (area, fragment, names)
    for figure in report["figures"]:
        value = figure["value"]
        assert isinstance(value, int | float), figure
        assert math.isfinite(value), figure
        # Small sizes are never judged against the full-size targets.
        assert figure["passed"] is None, figure
    throughput = [f for f in report["figures"] if f["unit"] in ("req/s", "events/s")]
    assert throughput
    assert all(float(f["value"]) > 0 for f in throughput)
    assert all(f["ratio"] is not None for f in throughput if "requests/s" in f["name"])


@pytest.mark.slow  # shares the smoke run above
def test_the_provisioning_bench_counts_each_requests_intercom_calls_and_sees_it_in_one_version(
    smoke_run: tuple[int, dict[str, Any]],
) -> None:
    # The bench itself reports a functional failure when a request makes other calls than
    # these, or its change is not in the snapshot and the change feed at one version; here
    # the figures it reports say the same.
    _, report = smoke_run
    figures = {
        str(f["name"]).replace(" (40 teammates)", ""): f
        for f in report["figures"]
        if f["area"] == "provisioning"
    }
    calls = {name: f["value"] for name, f in figures.items() if "Intercom calls" in name}
    assert calls == {
        "removal: Intercom calls per request": 1,
        "team add: Intercom calls per request": 2,
        "team removal: Intercom calls per request": 2,
        "removal replayed (same Idempotency-Key): Intercom calls in all": 0,
        "removal repeated without a key: Intercom calls in all": 0,
        "removal dry run: Intercom calls in all": 0,
        "team add replayed (same Idempotency-Key): Intercom calls in all": 0,
        # Only GET /teams/{id}: the store cannot know Intercom still lists the teammate.
        "team add repeated without a key: Intercom calls in all": 3,
        "team add dry run: Intercom calls in all": 0,
    }
    assert figures["removal: Intercom calls per request"]["note"] == (
        "DELETE /admins/remove x3, GET /me x1 over 3"
    )
    for what in ("team add", "team removal"):
        assert figures[f"{what}: Intercom calls per request"]["note"] == (
            "GET /teams/{id} x3, PUT /teams/{id} x3 over 3"
        )
    for what in ("removal", "team add", "team removal"):
        visible = figures[f"{what}: sent -> visible in snapshot, median"]
        assert "in the change feed in the same version 3/3" in visible["note"]
        assert len(visible["samples"]) == 3
        assert visible["ratio"] is not None
        assert figures[f"{what}: API call, median"]["ratio"] is not None


class UserRow(NamedTuple):
    """Hashable like SQLAlchemy's rows (the memo keys on them), with the columns served."""

    id: str
    name: str | None = "Ada"
    email: str | None = "ada@example.com"
    job_title: str | None = None
    has_inbox_seat: bool = True
    away_mode_enabled: bool = False
    away_mode_reassign: bool = False
    role_id: str | None = None
    account_type: str = "human"
    last_login_at: datetime | None = None
    removed_at: datetime | None = None
    last_login_method: str | None = None


class NamedRow(NamedTuple):
    id: str
    name: str | None


REMOVED = datetime(2026, 1, 1, tzinfo=UTC)


def _header(workspace_id: str = "w1", name: str = "Acme") -> StoreHeader:
    return StoreHeader(
        version=7,
        version_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        last_sync_at=None,
        last_webhook_at=None,
        workspace_id=workspace_id,
        workspace_name=name,
        workspace_region="US",
        cursor_key="k",
        change_log_pruned_through=0,
    )


def _plain(rows: SnapshotRows, *, roles_enabled: bool) -> bytes:
    return orjson.dumps(build_snapshot(rows, roles_enabled=roles_enabled))


def test_the_fast_snapshot_serializer_writes_exactly_the_bytes_of_the_plain_one() -> None:
    # Ids that JSON must escape, and ones that look like format placeholders: the fast path
    # splices escaped ids into ready-made grant JSON, so this is where it could go wrong.
    users = [
        UserRow('u"1', role_id="r%1"),
        UserRow("ü\n2", name=None, role_id="r%1"),
        UserRow("3\\"),
        UserRow("%(a)b", role_id="r\x01", last_login_at=REMOVED),
        UserRow("gone", role_id="r%1", removed_at=REMOVED),
    ]
    teams: list[Any] = [
        NamedRow('t"1', "Support"),
        NamedRow("%s", None),
        NamedRow("t\u2028", "Sales"),
    ]
    roles: list[Any] = [NamedRow("r%1", "Admin"), NamedRow("r\x01", None)]
    memberships = [
        ('t"1', 'u"1'),
        ("%s", "ü\n2"),
        ("%s", "%(a)b"),
        ("t\u2028", "3\\"),
        ("t\u2028", "gone"),  # a removed teammate: not served
        ("no-such-team", 'u"1'),  # a team that is not there: not served
    ]
    rows = SnapshotRows(_header('w"1', "Acme\\"), users, teams, memberships, roles)

    for roles_enabled in (False, True):
        expected = _plain(rows, roles_enabled=roles_enabled)
        assert serialize_snapshot(rows, roles_enabled=roles_enabled) == expected
        assert serialize_snapshot(rows, roles_enabled=roles_enabled, memo=SnapshotMemo()) == (
            expected
        )


def test_a_build_that_reuses_the_previous_builds_memo_matches_a_fresh_build() -> None:
    teams: list[Any] = [NamedRow("t1", "Support"), NamedRow("t2", "Sales")]
    versions = [
        # Version 1, then a sign-in (same memberships), then a removal and a team change.
        SnapshotRows(_header(), [UserRow("u1"), UserRow("u2")], teams, [("t1", "u1")], []),
        SnapshotRows(
            _header(),
            [UserRow("u1", last_login_at=REMOVED), UserRow("u2")],
            teams,
            [("t1", "u1")],
            [],
        ),
        SnapshotRows(
            _header(),
            [UserRow("u1", removed_at=REMOVED), UserRow("u2")],
            teams,
            [("t1", "u1"), ("t2", "u2")],
            [],
        ),
    ]
    memo = SnapshotMemo()
    for rows in versions:
        assert serialize_snapshot(rows, roles_enabled=False, memo=memo) == _plain(
            rows, roles_enabled=False
        )
    assert memo.links is not None
    assert memo.users
