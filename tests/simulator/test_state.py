"""The simulated workspace's membership relation, and the version test the simulator's routes
share, as properties of the plain objects (no server)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.simulator.records import SimAdmin, SimTeam
from app.simulator.responses import version_at_least
from app.simulator.state import SimWorkspace

ADMIN_IDS = ("1", "2", "3", "4")
TEAM_IDS = ("10", "11", "12")

Operation = tuple[Any, ...]
"""A workspace method's name and its arguments."""

_admin = st.sampled_from(ADMIN_IDS)
_team = st.sampled_from(TEAM_IDS)
OPERATIONS = st.one_of(
    st.tuples(st.just("upsert_admin"), _admin, st.lists(_team, max_size=4)),
    st.tuples(st.just("upsert_team"), _team, st.lists(_admin, max_size=5)),
    st.tuples(st.just("remove_admin"), _admin),
    st.tuples(st.just("remove_team"), _team),
    st.tuples(st.just("add_member"), _team, _admin),
    st.tuples(st.just("remove_member"), _team, _admin),
)


def _apply(
    ws: SimWorkspace, model: dict[str, set[str]], teams: set[str], op: tuple[Any, ...]
) -> None:
    """Apply ``op`` to the workspace and to ``model`` (admin id -> its team ids; ``teams`` the
    team ids that exist), which is what the operation means."""
    kind = op[0]
    if kind == "upsert_admin":
        _, admin_id, team_ids = op
        if not set(team_ids) <= teams:
            with pytest.raises(ValueError, match="unknown team ids"):
                ws.upsert_admin(SimAdmin(admin_id, "A", "a@acme.example", team_ids=team_ids))
            return
        ws.upsert_admin(SimAdmin(admin_id, "A", "a@acme.example", team_ids=team_ids))
        model[admin_id] = set(team_ids)
    elif kind == "upsert_team":
        _, team_id, admin_ids = op
        if not set(admin_ids) <= set(model):
            with pytest.raises(ValueError, match="unknown admin ids"):
                ws.upsert_team(SimTeam(team_id, "T", admin_ids=admin_ids))
            return
        ws.upsert_team(SimTeam(team_id, "T", admin_ids=admin_ids))
        teams.add(team_id)
        for admin_id, memberships in model.items():
            memberships.discard(team_id)
            if admin_id in admin_ids:
                memberships.add(team_id)
    elif kind == "remove_admin":
        assert ws.remove_admin(op[1]) == (op[1] in model)
        model.pop(op[1], None)
    elif kind == "remove_team":
        assert ws.remove_team(op[1]) == (op[1] in teams)
        teams.discard(op[1])
        for memberships in model.values():
            memberships.discard(op[1])
    elif kind == "add_member":
        _, team_id, admin_id = op
        if team_id not in teams or admin_id not in model:
            with pytest.raises(KeyError):
                ws.add_member(team_id, admin_id)
            return
        ws.add_member(team_id, admin_id)
        model[admin_id].add(team_id)
    else:
        _, team_id, admin_id = op
        was_member = team_id in model.get(admin_id, set())
        assert ws.remove_member(team_id, admin_id) == was_member
        if was_member:
            model[admin_id].discard(team_id)


@settings(max_examples=200, deadline=None)
@given(operations=st.lists(OPERATIONS, max_size=25))
def test_every_change_keeps_both_sides_of_a_membership_in_step(
    operations: list[tuple[Any, ...]],
) -> None:
    # Everyone exists and belongs nowhere at first, so most operations change something.
    ws = SimWorkspace(
        admins=[SimAdmin(a, "A", "a@acme.example") for a in ADMIN_IDS],
        teams=[SimTeam(t, "T") for t in TEAM_IDS],
    )
    model: dict[str, set[str]] = {a: set() for a in ADMIN_IDS}
    teams = set(TEAM_IDS)
    for op in operations:
        _apply(ws, model, teams, op)
        assert ws.check_consistency() == []
        assert {a.id: set(a.team_ids) for a in ws.admins.values()} == model
        assert set(ws.teams) == teams
        for team in ws.teams.values():
            assert set(team.admin_ids) == {a for a, ts in model.items() if team.id in ts}
            assert len(team.admin_ids) == len(set(team.admin_ids))
        for admin in ws.admins.values():
            assert len(admin.team_ids) == len(set(admin.team_ids))


@given(
    major=st.integers(0, 3),
    minor=st.integers(0, 20),
    wanted=st.tuples(st.integers(0, 3), st.integers(0, 20)),
)
def test_a_numbered_version_is_at_least_what_its_numbers_say(
    major: int, minor: int, wanted: tuple[int, int]
) -> None:
    assert version_at_least(f"{major}.{minor}", wanted) == ((major, minor) >= wanted)
    assert version_at_least(f" {major}.{minor} ", wanted) == ((major, minor) >= wanted)


@pytest.mark.parametrize("version", ["Preview", "preview", "Unstable", " unstable "])
def test_preview_and_unstable_are_later_than_every_numbered_version(version: str) -> None:
    assert version_at_least(version, (2, 17))


@pytest.mark.parametrize("version", [None, "", "latest", "2.x", "two"])
def test_no_version_or_an_unreadable_one_is_not_at_least_any(version: str | None) -> None:
    assert not version_at_least(version, (0, 0))
