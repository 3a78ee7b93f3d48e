"""The teammates one batch of webhook events touches: read in a few queries when the batch
starts, changed in memory as each event applies, and written back in a few statements before
the batch commits.

Applying events one statement at a time cost 4–6 round trips per event, and on SQLite the
inbox writer waits for the write lock all that time. Only valid inside a write transaction
that holds the writer lock (`lock_store_state`): nobody else can change these rows between the
read and the write-back, so the in-memory view is the store's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from app.store import directory
from app.store.directory import STORED_USER_COLUMNS, USER_FIELDS, StoredUser, stored_user
from app.store.models import Membership, Team, User

# SQLite caps the bound parameters of one statement (32,766 since 3.32; 999 before).
_CHUNK = 500
_GET_USERS = select(*STORED_USER_COLUMNS).where(User.id.in_(bindparam("ids", expanding=True)))
_MEMBERSHIPS_OF = select(Membership.team_id, Membership.user_id).where(
    Membership.user_id.in_(bindparam("ids", expanding=True))
)
_KNOWN_TEAMS = select(Team.id).where(Team.id.in_(bindparam("ids", expanding=True)))
# StoredUser attributes an update can change besides `fields`.
_TRACKED = frozenset(
    f.name for f in dataclasses.fields(StoredUser) if f.name not in ("id", "fields")
)


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


class TeammateWorkset:
    """Teammates (with their team ids) and teams, as the transaction sees them plus the changes
    made through this object, which `flush` writes."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._users: dict[str, StoredUser | None] = {}
        self._teams_of: dict[str, set[str]] = {}
        self._teams_checked: dict[str, bool] = {}  # team id -> exists
        self._inserts: dict[str, dict[str, Any]] = {}
        self._updates: dict[str, dict[str, Any]] = {}
        self._memberships_added: set[tuple[str, str]] = set()
        self._memberships_removed: set[tuple[str, str]] = set()

    def load(self, user_ids: Iterable[str], team_ids: Iterable[str] = ()) -> None:
        """Read the teammates and teams not read yet, a few hundred per query."""
        connection = self._session.connection()
        wanted = [uid for uid in set(user_ids) if uid not in self._users]
        for chunk in _chunks(wanted):
            for uid in chunk:
                self._users[uid] = None
                self._teams_of[uid] = set()
            for row in connection.execute(_GET_USERS, {"ids": chunk}):
                self._users[row.id] = stored_user(row)
            for team_id, user_id in connection.execute(_MEMBERSHIPS_OF, {"ids": chunk}):
                self._teams_of[user_id].add(team_id)
        teams = [tid for tid in set(team_ids) if tid not in self._teams_checked]
        for chunk in _chunks(teams):
            for tid in chunk:
                self._teams_checked[tid] = False
            for team_id in connection.execute(_KNOWN_TEAMS, {"ids": chunk}).scalars():
                self._teams_checked[team_id] = True

    def get_user(self, user_id: str) -> StoredUser | None:
        if user_id not in self._users:
            self.load([user_id])
        return self._users[user_id]

    def user_team_ids(self, user_id: str) -> set[str]:
        if user_id not in self._users:
            self.load([user_id])
        return set(self._teams_of[user_id])

    def known_team_ids(self, team_ids: Iterable[str]) -> set[str]:
        wanted = set(team_ids)
        self.load((), wanted)
        return {tid for tid in wanted if self._teams_checked[tid]}

    def insert_user(self, row: dict[str, Any]) -> None:
        """Add a teammate the store does not hold (`row` has the column values)."""
        user_id = row["id"]
        if self.get_user(user_id) is not None:
            raise ValueError(f"teammate {user_id} is stored already")
        self._inserts[user_id] = dict(row)
        self._users[user_id] = StoredUser(
            id=user_id,
            fields={name: row.get(name) for name in USER_FIELDS},
            **{name: row.get(name) for name in _TRACKED},
        )

    def update_user(self, user_id: str, values: dict[str, Any]) -> None:
        user = self.get_user(user_id)
        if user is None:
            raise ValueError(f"teammate {user_id} is not stored")
        if not values:
            return
        pending = self._inserts.get(user_id)
        if pending is None:
            pending = self._updates.setdefault(user_id, {})
        pending.update(values)
        fields = {**user.fields, **{k: v for k, v in values.items() if k in user.fields}}
        tracked = {k: v for k, v in values.items() if k in _TRACKED}
        self._users[user_id] = dataclasses.replace(user, fields=fields, **tracked)

    def add_memberships(self, pairs: Iterable[tuple[str, str]]) -> None:
        for team_id, user_id in pairs:
            teams = self._teams_of_loaded(user_id)
            if team_id in teams:
                continue
            teams.add(team_id)
            if (team_id, user_id) in self._memberships_removed:
                self._memberships_removed.discard((team_id, user_id))
            else:
                self._memberships_added.add((team_id, user_id))

    def remove_memberships(self, pairs: Iterable[tuple[str, str]]) -> None:
        for team_id, user_id in pairs:
            teams = self._teams_of_loaded(user_id)
            if team_id not in teams:
                continue
            teams.discard(team_id)
            if (team_id, user_id) in self._memberships_added:
                self._memberships_added.discard((team_id, user_id))
            else:
                self._memberships_removed.add((team_id, user_id))

    def _teams_of_loaded(self, user_id: str) -> set[str]:
        if user_id not in self._users:
            self.load([user_id])
        return self._teams_of[user_id]

    def flush(self) -> None:
        """Write the changes made so far (teammates before the memberships that name them)."""
        session = self._session
        # One executemany per set of columns (events set different ones).
        new_by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in self._inserts.values():
            new_by_columns.setdefault(tuple(sorted(row)), []).append(row)
        for rows in new_by_columns.values():
            directory.insert_user_rows(session, rows)
        changed_by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for user_id, values in self._updates.items():
            row = {"id": user_id, **values}
            changed_by_columns.setdefault(tuple(sorted(values)), []).append(row)
        for rows in changed_by_columns.values():
            directory.update_users(session, rows)
        directory.remove_memberships(session, self._memberships_removed)
        directory.add_memberships(session, self._memberships_added)
        self._inserts.clear()
        self._updates.clear()
        self._memberships_added.clear()
        self._memberships_removed.clear()
