"""The baseline's diff as a pure function (issue 18.5): what Intercom lists, against what the
store holds as plain data, gives the plan a run writes, with no database. Pinned by examples
(the brake, ghosts, webhooks newer than the fetch, what the store cannot hold, times in the
future, roles) and by a property: applying a plan to the stored data gives what Intercom says,
and planning again finds nothing left to do."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.intercom.models import (
    IntercomAdmin,
    IntercomTeam,
    IntercomWorkspace,
    user_fields_from_admin,
)
from app.store.directory import MAX_EMAIL_LENGTH, USER_FIELDS, Directory, StoredUser
from app.store.versioning import (
    DELETE,
    GRANT,
    ROLE,
    TEAM,
    UPSERT,
    USER,
    membership_grant_id,
    role_grant_id,
)
from app.sync.guards import WorkspaceChanged
from app.sync.plan import (
    BaselinePlan,
    FetchedWorkspace,
    StoredWorkspace,
    SyncStats,
    diff_baseline,
)

FETCHED_AT = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
NOW = FETCHED_AT + timedelta(seconds=30)
WORKSPACE = "ws1"
PROPERTY = settings(max_examples=60, deadline=None, database=None)


def admin(
    uid: str | int,
    *,
    name: str | None = None,
    team_ids: list[Any] | None = None,
    role: tuple[str, str] | None = None,
    email: str | None = None,
) -> IntercomAdmin:
    return IntercomAdmin.model_validate(
        {
            "id": uid,
            "name": name or f"Teammate {uid}",
            "email": email or f"t{uid}@acme.example",
            "team_ids": team_ids or [],
            "role": {"id": role[0], "name": role[1]} if role else None,
        }
    )


def team(
    tid: str | int, admin_ids: list[Any] | None = None, name: str | None = None
) -> IntercomTeam:
    return IntercomTeam.model_validate(
        {"id": tid, "name": name or f"Team {tid}", "admin_ids": admin_ids or []}
    )


def fetched(
    admins: list[IntercomAdmin],
    teams: list[IntercomTeam] | None = None,
    *,
    roles_supported: bool = False,
    workspace: str = WORKSPACE,
) -> FetchedWorkspace:
    return FetchedWorkspace(
        workspace=IntercomWorkspace(id_code=workspace, name="Acme", region="US"),
        admins=admins,
        teams=teams or [],
        fetch_started_at=FETCHED_AT,
        roles_supported=roles_supported,
    )


def stored_user(
    source: IntercomAdmin,
    *,
    removed: bool = False,
    event_applied_at: datetime | None = None,
    last_login_at: datetime | None = None,
    roles_supported: bool = False,
) -> StoredUser:
    return StoredUser(
        id=source.id,
        fields=user_fields_from_admin(source, roles_supported=roles_supported),
        removed_at=FETCHED_AT - timedelta(days=3) if removed else None,
        event_watermark=None,
        away_watermark=None,
        event_applied_at=event_applied_at,
        last_login_at=last_login_at,
        last_logout_at=None,
    )


def store_of(
    users: list[StoredUser],
    teams: dict[str, str | None] | None = None,
    memberships: set[tuple[str, str]] | None = None,
    roles: dict[str, str | None] | None = None,
    *,
    unseen: set[str] | None = None,
    in_future: set[str] | None = None,
    workspace: str | None = WORKSPACE,
) -> StoredWorkspace:
    return StoredWorkspace(
        workspace_id=workspace,
        version=7,
        directory=Directory(
            users={user.id: user for user in users},
            teams=teams or {},
            memberships=memberships or set(),
            roles=roles or {},
        ),
        unseen=unseen or set(),
        in_future=in_future or set(),
    )


def plan_of(
    stored: StoredWorkspace, intercom: FetchedWorkspace, now: datetime = NOW
) -> BaselinePlan:
    return diff_baseline(stored, intercom, now=now, max_removal_fraction=0.25)


def assert_empty(plan: BaselinePlan) -> None:
    assert not plan.changes.ops
    assert plan.stats == SyncStats()
    assert plan.blocked is None
    assert (plan.new_users, plan.changed_rows, plan.warnings) == ([], [], [])
    assert plan.new_teams == plan.renamed == plan.new_roles == plan.renamed_roles == {}
    assert plan.pairs_added == plan.pairs_removed == set()
    assert plan.newly_seen == plan.gone_teams == plan.gone_roles == plan.expired_ghosts == set()
    assert plan.repairs.served == plan.repairs.bookkeeping == []


class TestExamples:
    def test_a_first_baseline_adds_every_teammate_team_and_membership_from_both_sides(
        self,
    ) -> None:
        intercom = fetched(
            [admin(1, team_ids=[10]), admin("2")], [team(10, admin_ids=[2]), team("11")]
        )
        plan = plan_of(store_of([], workspace=None), intercom)
        assert plan.blocked is None
        assert sorted(uid for uid, _ in plan.new_users) == ["1", "2"]
        assert plan.new_teams == {"10": "Team 10", "11": "Team 11"}
        assert plan.pairs_added == {("10", "1"), ("10", "2")}
        assert plan.stats == SyncStats(users_added=2, teams_added=2, memberships_added=2)
        assert (plan.version_before, plan.version) == (7, 8)
        assert plan.changes.ops == {
            (USER, "1"): UPSERT,
            (USER, "2"): UPSERT,
            (TEAM, "10"): UPSERT,
            (TEAM, "11"): UPSERT,
            (GRANT, membership_grant_id("10", "1")): UPSERT,
            (GRANT, membership_grant_id("10", "2")): UPSERT,
        }

    def test_what_the_store_already_holds_is_planned_as_nothing(self) -> None:
        admins = [admin(1, team_ids=[10]), admin(2)]
        stored = store_of([stored_user(a) for a in admins], {"10": "Team 10"}, {("10", "1")})
        assert_empty(plan_of(stored, fetched(admins, [team(10)])))

    def test_a_change_a_removal_and_a_re_add_are_rows_to_update(self) -> None:
        renamed, gone, back = admin(1), admin(2), admin(3)
        stored = store_of(
            [stored_user(renamed), stored_user(gone), stored_user(back, removed=True)],
            {"10": "Old name"},
            {("10", "2")},
        )
        plan = plan_of(stored, fetched([admin(1, name="New name"), back], [team(10)]))
        rows = {row["id"]: row for row in plan.changed_rows}
        assert rows["1"]["name"] == "New name"
        assert rows["1"]["removed_at"] is None
        assert rows["2"]["removed_at"] == NOW
        assert rows["3"]["removed_at"] is None
        assert plan.renamed == {"10": "Team 10"}
        assert plan.pairs_removed == {("10", "2")}
        assert plan.stats == SyncStats(
            users_added=1, users_updated=1, users_removed=1, teams_updated=1, memberships_removed=1
        )
        assert plan.changes.ops[(USER, "2")] == DELETE
        assert plan.changes.ops[(GRANT, membership_grant_id("10", "2"))] == DELETE

    def test_the_brake_names_everyone_it_would_remove_and_force_still_has_the_plan(self) -> None:
        everyone = [admin(uid) for uid in range(1, 11)]
        plan = plan_of(store_of([stored_user(a) for a in everyone]), fetched(everyone[:3]))
        assert plan.blocked is not None
        assert plan.blocked.message == (
            "this run would remove 7 of 10 teammates, more than MAX_REMOVAL_FRACTION=0.25 "
            "allows; nothing was applied. If it is real, resync with force to apply it "
            "(POST /resync?force=true, or intercom-sync sync --force)."
        )
        assert (plan.blocked.would_remove, plan.blocked.active_users) == (7, 10)
        assert [t["id"] for t in plan.blocked.teammates] == sorted(str(u) for u in range(4, 11))
        assert plan.blocked.teammates[0] == {
            "id": "10",
            "name": "Teammate 10",
            "email": "t10@acme.example",
        }
        assert plan.stats.users_removed == 7

    def test_five_removals_never_brake_and_an_empty_answer_always_does(self) -> None:
        six = [admin(uid) for uid in range(1, 7)]
        stored = store_of([stored_user(a) for a in six])
        assert plan_of(stored, fetched(six[:1])).blocked is None
        nobody = plan_of(store_of([stored_user(a) for a in six[:2]]), fetched([]))
        assert nobody.blocked is not None
        assert nobody.blocked.message.startswith(
            "Intercom returned no teammates while 2 are stored; nothing was applied."
        )

    def test_ghosts_are_removed_outside_the_brake_and_their_old_tombstones_deleted(self) -> None:
        listed = [admin(uid) for uid in range(1, 7)]
        ghosts = [admin(uid) for uid in range(100, 107)]
        old_tombstone = stored_user(
            admin(200), removed=True, event_applied_at=NOW - timedelta(days=8)
        )
        young_tombstone = stored_user(
            admin(201), removed=True, event_applied_at=NOW - timedelta(days=1)
        )
        stored = store_of(
            [*(stored_user(a) for a in listed + ghosts), old_tombstone, young_tombstone],
            unseen={g.id for g in ghosts} | {"200", "201", "1"},
        )
        plan = plan_of(stored, fetched(listed))
        assert plan.blocked is None  # 7 removals of 13 active, but all of them ghosts
        assert plan.stats.users_removed == 7
        assert plan.expired_ghosts == {"200"}
        assert plan.changes.ops[(USER, "200")] == DELETE
        assert (USER, "201") not in plan.changes.ops
        assert plan.newly_seen == {"1"}

    def test_a_teammate_a_webhook_changed_after_the_fetch_began_is_left_alone(self) -> None:
        newer = stored_user(admin(1, team_ids=[10]), event_applied_at=FETCHED_AT)
        stored = store_of([newer], {"10": "Team 10"}, {("10", "1")})
        # Intercom lists it renamed, then not at all: neither is applied.
        for listed in ([admin(1, name="Stale")], []):
            plan = plan_of(stored, fetched(listed, [team(10)]))
            assert (plan.new_users, plan.changed_rows) == ([], [])
            assert plan.pairs_removed == set()
            assert plan.blocked is None or listed == []

    def test_a_teammate_the_store_cannot_hold_is_reported_and_left_as_it_was(self) -> None:
        too_long = "x" * MAX_EMAIL_LENGTH + "@acme.example"
        plan = plan_of(store_of([]), fetched([admin(1), admin(2, email=too_long)]))
        assert [uid for uid, _ in plan.new_users] == ["1"]
        assert [(w["resource_type"], w["id"]) for w in plan.warnings] == [(USER, "2")]
        assert "characters long" in plan.warnings[0]["reason"]

    def test_another_workspace_is_refused_before_anything_is_planned(self) -> None:
        with pytest.raises(WorkspaceChanged) as refused:
            plan_of(store_of([], workspace="ws-old"), fetched([admin(1)], workspace="ws-new"))
        assert (refused.value.stored, refused.value.fetched) == ("ws-old", "ws-new")

    def test_times_in_the_future_are_repaired(self) -> None:
        poisoned = stored_user(admin(1), last_login_at=NOW + timedelta(days=400))
        plan = plan_of(store_of([poisoned], in_future={"1"}), fetched([admin(1)]))
        assert [row["id"] for row in plan.repairs.served] == ["1"]
        assert plan.repairs.served[0]["last_login_at"] is None
        assert plan.changes.ops[(USER, "1")] == UPSERT

    def test_memberships_naming_unknown_teammates_or_teams_are_counted_and_ignored(self) -> None:
        plan = plan_of(store_of([]), fetched([admin(1, team_ids=[99])], [team(10, [1, 555])]))
        assert plan.pairs_added == {("10", "1")}
        assert plan.unknown_references == 2

    def test_a_new_role_is_added_and_the_grant_moves_with_the_teammate(self) -> None:
        before = stored_user(admin(1, role=("r1", "Admin")), roles_supported=True)
        stored = store_of([before], roles={"r1": "Admin"})
        plan = plan_of(stored, fetched([admin(1, role=("r2", "Support"))], roles_supported=True))
        assert plan.new_roles == {"r2": "Support"}
        assert plan.gone_roles == {"r1"}
        assert plan.changes.ops[(ROLE, "r2")] == UPSERT
        assert plan.changes.ops[(GRANT, role_grant_id("r1", "1"))] == DELETE
        assert plan.changes.ops[(GRANT, role_grant_id("r2", "1"))] == UPSERT


# ----- the property --------------------------------------------------------------------------


def applied(
    stored: StoredWorkspace, intercom: FetchedWorkspace, plan: BaselinePlan
) -> StoredWorkspace:
    """What `write_baseline` leaves in the store, on plain data."""
    directory = stored.directory
    users = {
        uid: dataclasses.replace(user, fields=dict(user.fields))
        for uid, user in directory.users.items()
    }
    for row in plan.repairs.served + plan.repairs.bookkeeping:
        for key, value in row.items():
            if key not in ("id", "updated_version"):
                setattr(users[row["id"]], key, value)
    for uid, fields in plan.new_users:
        users[uid] = StoredUser(uid, dict(fields), None, None, None, None, None, None)
    for row in plan.changed_rows:
        user = users[row["id"]]
        user.fields = {name: row[name] for name in USER_FIELDS}
        user.removed_at = row["removed_at"]
    for uid in plan.expired_ghosts:
        del users[uid]
    memberships = (directory.memberships - plan.pairs_removed) | plan.pairs_added
    teams = {**directory.teams, **plan.new_teams, **plan.renamed}
    roles = {**directory.roles, **plan.new_roles, **plan.renamed_roles}
    for tid in plan.gone_teams:
        del teams[tid]
    for rid in plan.gone_roles:
        del roles[rid]
    return StoredWorkspace(
        workspace_id=intercom.workspace.id_code,
        version=plan.version if plan.changes else stored.version,
        directory=Directory(
            users=users,
            teams=teams,
            memberships={(tid, uid) for tid, uid in memberships if uid in users},
            roles=roles,
        ),
        unseen=stored.unseen - plan.newly_seen - plan.expired_ghosts,
        in_future=set(),
    )


@dataclass
class Truth:
    users: dict[str, dict[str, Any]]
    teams: dict[str, str | None]
    memberships: set[tuple[str, str]]
    roles: dict[str, str | None]


def what_intercom_says(intercom: FetchedWorkspace) -> Truth:
    """Intercom's lists as a store would hold them: ids as strings, a later duplicate of a
    teammate or team in place of an earlier one, memberships from both sides naming listed
    teammates and teams."""
    users = {
        a.id: user_fields_from_admin(a, roles_supported=intercom.roles_supported)
        for a in intercom.admins
    }
    teams = {t.id: t.name for t in intercom.teams}
    pairs = {(t.id, uid) for t in intercom.teams for uid in t.admin_ids}
    pairs |= {(tid, a.id) for a in intercom.admins for tid in a.team_ids}
    roles = {a.role.id: a.role.name for a in intercom.admins if intercom.roles_supported and a.role}
    return Truth(
        users,
        teams,
        {(tid, uid) for tid, uid in pairs if tid in teams and uid in users},
        roles,
    )


def served(store: StoredWorkspace) -> Truth:
    directory = store.directory
    return Truth(
        {uid: user.fields for uid, user in directory.users.items() if user.active},
        directory.teams,
        directory.memberships,
        directory.roles,
    )


USER_IDS = st.integers(min_value=1, max_value=9)
TEAM_IDS = st.integers(min_value=50, max_value=54)
# The same id as Intercom's REST API (a string) or its webhooks (a number) send it.
AS_SENT = st.sampled_from([str, int])
# One name per role id, as Intercom answers in one listing (stored names may differ).
ROLES = st.one_of(st.none(), st.sampled_from([("r1", "Admin"), ("r2", "Support")]))
NAMES = st.sampled_from(["Ada", "Grace", None])


@st.composite
def intercom_admins(draw: st.DrawFn) -> IntercomAdmin:
    uid = draw(USER_IDS)
    return admin(
        draw(AS_SENT)(uid),
        name=draw(NAMES) or f"Teammate {uid}",
        team_ids=draw(st.lists(st.builds(lambda t, f: f(t), TEAM_IDS, AS_SENT), max_size=3)),
        role=draw(ROLES),
        email=draw(st.sampled_from([f"t{uid}@acme.example", f"operator+{uid}@intercom.io"])),
    )


@st.composite
def intercom_teams(draw: st.DrawFn) -> IntercomTeam:
    tid = draw(TEAM_IDS)
    return team(
        draw(AS_SENT)(tid),
        draw(st.lists(st.builds(lambda u, f: f(u), USER_IDS, AS_SENT), max_size=4)),
        name=draw(st.sampled_from([f"Team {tid}", "Renamed"])),
    )


@st.composite
def stores(draw: st.DrawFn, roles_supported: bool) -> StoredWorkspace:
    """A store as earlier baselines and webhooks leave it: active teammates and tombstones,
    some only webhooks announced (ghosts), memberships of active teammates only. No webhook is
    newer than the fetch, and no time lies in the future (examples above pin both)."""
    users: dict[str, StoredUser] = {}
    for source in draw(st.lists(intercom_admins(), max_size=9)):
        users[source.id] = stored_user(
            source,
            removed=draw(st.booleans()),
            event_applied_at=draw(
                st.sampled_from([None, FETCHED_AT - timedelta(hours=1), NOW - timedelta(days=30)])
            ),
            roles_supported=roles_supported,
        )
    teams = draw(st.dictionaries(TEAM_IDS.map(str), NAMES, max_size=4))
    active = sorted(uid for uid, user in users.items() if user.active)
    memberships: set[tuple[str, str]] = set()
    if teams and active:
        memberships = draw(
            st.sets(st.tuples(st.sampled_from(sorted(teams)), st.sampled_from(active)))
        )
    roles = draw(st.dictionaries(st.sampled_from(["r1", "r2", "r3"]), NAMES, max_size=3))
    unseen = draw(st.sets(st.sampled_from(sorted(users)))) if users else set()
    return store_of(list(users.values()), teams, memberships, roles, unseen=unseen)


@st.composite
def cases(draw: st.DrawFn) -> tuple[StoredWorkspace, FetchedWorkspace]:
    roles_supported = draw(st.booleans())
    intercom = fetched(
        draw(st.lists(intercom_admins(), max_size=10)),
        draw(st.lists(intercom_teams(), max_size=6)),
        roles_supported=roles_supported,
    )
    return draw(stores(roles_supported)), intercom


@PROPERTY
@given(cases())
def test_applying_a_plan_gives_what_intercom_says_and_a_second_plan_is_empty(
    case: tuple[StoredWorkspace, FetchedWorkspace],
) -> None:
    stored, intercom = case
    truth = what_intercom_says(intercom)
    first = plan_of(stored, intercom)
    # The brake's verdict does not change the plan: `force` writes this very plan.
    after = applied(stored, intercom, first)
    assert served(after) == truth

    # A ghost the first plan removed whose last notification is already older than the
    # tombstones are kept for is deleted outright by the next plan, and that is all it does.
    second = plan_of(after, intercom, NOW + timedelta(minutes=15))
    removed_ghosts = {
        row["id"]
        for row in first.changed_rows
        if row["removed_at"] is not None and row["id"] in stored.unseen
    }
    assert second.expired_ghosts <= removed_ghosts
    assert second.changes.ops == {(USER, uid): DELETE for uid in second.expired_ghosts}
    settled = applied(after, intercom, second)
    assert served(settled) == truth
    assert_empty(plan_of(settled, intercom, NOW + timedelta(minutes=30)))


@PROPERTY
@given(cases(), st.randoms(use_true_random=False))
def test_the_order_intercom_lists_in_does_not_change_the_plan(
    case: tuple[StoredWorkspace, FetchedWorkspace], rng: Any
) -> None:
    """Reordering changes nothing, as long as no teammate or team is listed twice (then the
    later one wins, as in `what_intercom_says`)."""
    stored, intercom = case
    admins = list({a.id: a for a in intercom.admins}.values())
    teams = list({t.id: t for t in intercom.teams}.values())
    deduplicated = dataclasses.replace(intercom, admins=admins, teams=teams)
    admins, teams = admins[:], teams[:]
    rng.shuffle(admins)
    rng.shuffle(teams)
    shuffled = dataclasses.replace(intercom, admins=admins, teams=teams)
    one, other = plan_of(stored, deduplicated), plan_of(stored, shuffled)
    assert one.changes.ops == other.changes.ops
    assert one.stats == other.stats
    assert served(applied(stored, intercom, one)) == served(applied(stored, intercom, other))
