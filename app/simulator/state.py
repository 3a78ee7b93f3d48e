"""Thread-safe in-memory Intercom workspace that backs the simulator.

The server reads it on uvicorn's thread while tests mutate it from theirs, so every access to
``admins``/``teams``, the fault queue and the request log goes through one lock. The records it
holds are in ``records``, what a fault is in ``faults``.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from app.simulator.activity_log import SimActivityLog
from app.simulator.faults import Fault
from app.simulator.records import Role, SimAdmin, SimTeam, required_str

_Linked = TypeVar("_Linked", SimAdmin, SimTeam)


def _relink(
    ident: str,
    old: Iterable[str],
    new: list[str],
    others: Mapping[str, _Linked],
    links: Callable[[_Linked], list[str]],
) -> None:
    """The other side of one membership change: ``ident`` leaves the ``links`` of the ``old``
    ones among ``others`` that are not ``new``, and joins those of every ``new`` one."""
    for other_id in set(old) - set(new):
        other = others.get(other_id)
        if other is not None and ident in links(other):
            links(other).remove(ident)
    for other_id in new:
        back = links(others[other_id])
        if ident not in back:
            back.append(ident)


def _unlink_everywhere(
    ident: str, others: Iterable[_Linked], links: Callable[[_Linked], list[str]]
) -> None:
    for other in others:
        if ident in links(other):
            links(other).remove(ident)


def _members(team: SimTeam) -> list[str]:
    return team.admin_ids


def _memberships(admin: SimAdmin) -> list[str]:
    return admin.team_ids


@dataclass(frozen=True)
class RecordedRequest:
    """One API request as the simulator received it (header names lowercased)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    at: float

    def to_dict(self) -> dict[str, Any]:
        """The control-plane JSON form."""
        return dataclasses.asdict(self)


class SimWorkspace:
    """An Intercom workspace: admins, teams, scripted faults and a log of API requests.

    ``team.admin_ids`` and ``admin.team_ids`` describe one relation; the mutation methods keep both
    sides in step. Code that edits ``admins``/``teams`` directly must hold ``lock`` and keep them
    consistent itself (or deliberately not, to test a syncer's cross-checks).
    """

    def __init__(
        self,
        id_code: str = "sim0ws01",
        name: str = "Acme Support",
        region: str = "US",
        admins: Mapping[str, SimAdmin] | Iterable[SimAdmin] = (),
        teams: Mapping[str, SimTeam] | Iterable[SimTeam] = (),
        *,
        api_version: str = "2.14",
        rate_limit: int = 10_000,
        rate_limit_window_seconds: float = 10.0,
        max_recorded_requests: int = 50_000,
        enforce_rate_limit: bool = False,
    ) -> None:
        self.id_code = id_code
        self.name = name
        self.region = region
        # The version the app is pinned to in the Developer Hub: used when no header is sent.
        self.api_version = api_version
        # Taken as given (not copied or checked) so generated 50,000-admin workspaces load fast.
        admin_list = admins.values() if isinstance(admins, Mapping) else admins
        team_list = teams.values() if isinstance(teams, Mapping) else teams
        self.admins: dict[str, SimAdmin] = {a.id: a for a in admin_list}
        self.teams: dict[str, SimTeam] = {t.id: t for t in team_list}
        # Calls per minute per app, as Intercom states its limit, spread over windows.
        self.rate_limit = rate_limit
        self.rate_limit_window_seconds = rate_limit_window_seconds
        # Off by default: 429s then come only from faults. On, a call past its window's share
        # answers 429 as Intercom does (benchmarks that claim "within the rate limit" use it).
        self.enforce_rate_limit = enforce_rate_limit
        self.activity = SimActivityLog()
        self.lock = threading.Lock()
        self._faults: list[Fault] = []
        # Bounded so a long benchmark cannot grow the log without limit.
        self._requests: collections.deque[RecordedRequest] = collections.deque(
            maxlen=max_recorded_requests
        )
        self._window_start = 0.0
        self._window_count = 0

    # -- admins and teams ---------------------------------------------------------------------

    def upsert_admin(self, admin: SimAdmin) -> SimAdmin:
        """Insert or replace an admin; its ``team_ids`` become its memberships."""
        new = admin.copy()
        new.team_ids = list(dict.fromkeys(new.team_ids))
        with self.lock:
            missing = [t for t in new.team_ids if t not in self.teams]
            if missing:
                raise ValueError(f"unknown team ids: {missing}")
            old = self.admins.get(new.id)
            old_teams = old.team_ids if old is not None else []
            _relink(new.id, old_teams, new.team_ids, self.teams, _members)
            self.admins[new.id] = new
            return new.copy()

    def remove_admin(self, admin_id: str) -> bool:
        """Delete an admin and drop it from every team; False if it did not exist."""
        with self.lock:
            if self.admins.pop(admin_id, None) is None:
                return False
            _unlink_everywhere(admin_id, self.teams.values(), _members)
            return True

    def upsert_team(self, team: SimTeam) -> SimTeam:
        """Insert or replace a team; its ``admin_ids`` become its members."""
        new = team.copy()
        new.admin_ids = list(dict.fromkeys(new.admin_ids))
        with self.lock:
            missing = [a for a in new.admin_ids if a not in self.admins]
            if missing:
                raise ValueError(f"unknown admin ids: {missing}")
            old = self.teams.get(new.id)
            old_members = old.admin_ids if old is not None else []
            _relink(new.id, old_members, new.admin_ids, self.admins, _memberships)
            self.teams[new.id] = new
            return new.copy()

    def remove_team(self, team_id: str) -> bool:
        """Delete a team and drop it from every admin's ``team_ids``; False if it did not exist."""
        with self.lock:
            if self.teams.pop(team_id, None) is None:
                return False
            _unlink_everywhere(team_id, self.admins.values(), _memberships)
            return True

    def add_member(self, team_id: str, admin_id: str) -> None:
        """Put an admin in a team (both sides); KeyError if either is unknown."""
        with self.lock:
            team, admin = self.teams[team_id], self.admins[admin_id]
            if admin_id not in team.admin_ids:
                team.admin_ids.append(admin_id)
            if team_id not in admin.team_ids:
                admin.team_ids.append(team_id)

    def remove_member(self, team_id: str, admin_id: str) -> bool:
        """Take an admin out of a team (both sides); False if it was not a member."""
        with self.lock:
            team, admin = self.teams.get(team_id), self.admins.get(admin_id)
            removed = False
            if team is not None and admin_id in team.admin_ids:
                team.admin_ids.remove(admin_id)
                removed = True
            if admin is not None and team_id in admin.team_ids:
                admin.team_ids.remove(team_id)
                removed = True
            return removed

    def set_role(self, admin_id: str, role: Role | None) -> None:
        """Assign (or with None, clear) an admin's role; KeyError if the admin is unknown."""
        with self.lock:
            self.admins[admin_id].role = role

    def get_admin(self, admin_id: str) -> SimAdmin | None:
        """A copy of one admin, or None."""
        with self.lock:
            admin = self.admins.get(admin_id)
            return admin.copy() if admin is not None else None

    def get_team(self, team_id: str) -> SimTeam | None:
        """A copy of one team, or None."""
        with self.lock:
            team = self.teams.get(team_id)
            return team.copy() if team is not None else None

    def check_consistency(self) -> list[str]:
        """Every disagreement between the two sides of the membership relation (empty if none)."""
        problems: list[str] = []
        with self.lock:
            for team in self.teams.values():
                for aid in team.admin_ids:
                    admin = self.admins.get(aid)
                    if admin is None:
                        problems.append(f"team {team.id} lists unknown admin {aid}")
                    elif team.id not in admin.team_ids:
                        problems.append(f"team {team.id} lists admin {aid} but not vice versa")
            for admin in self.admins.values():
                for tid in admin.team_ids:
                    team_obj = self.teams.get(tid)
                    if team_obj is None:
                        problems.append(f"admin {admin.id} lists unknown team {tid}")
                    elif admin.id not in team_obj.admin_ids:
                        problems.append(f"admin {admin.id} lists team {tid} but not vice versa")
        return problems

    # -- whole-state JSON ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The whole workspace (not faults or the request log) as control-plane JSON."""
        with self.lock:
            return {
                "id_code": self.id_code,
                "name": self.name,
                "region": self.region,
                "api_version": self.api_version,
                "admins": [a.to_dict() for a in self.admins.values()],
                "teams": [t.to_dict() for t in self.teams.values()],
            }

    def load_dict(self, data: Mapping[str, Any], *, strict: bool = True) -> None:
        """Replace the workspace with ``data`` (the ``to_dict`` shape); ValueError if invalid."""
        # With strict, both sides of every membership must agree or nothing changes; without it
        # the data is stored as given, to simulate an Intercom whose two sides disagree.
        admins_raw = data.get("admins", [])
        teams_raw = data.get("teams", [])
        if not isinstance(admins_raw, list) or not isinstance(teams_raw, list):
            raise ValueError("'admins' and 'teams' must be lists")
        candidate = SimWorkspace(
            id_code=required_str(data.get("id_code", self.id_code), "id_code"),
            name=required_str(data.get("name", self.name), "name"),
            region=required_str(data.get("region", self.region), "region"),
            admins=[SimAdmin.from_dict(a) for a in admins_raw],
            teams=[SimTeam.from_dict(t) for t in teams_raw],
            api_version=required_str(data.get("api_version", self.api_version), "api_version"),
        )
        if strict:
            problems = candidate.check_consistency()
            if problems:
                more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
                raise ValueError("inconsistent memberships: " + "; ".join(problems[:5]) + more)
        with self.lock:
            self.id_code = candidate.id_code
            self.name = candidate.name
            self.region = candidate.region
            self.api_version = candidate.api_version
            self.admins = candidate.admins
            self.teams = candidate.teams

    # -- faults -------------------------------------------------------------------------------

    def add_fault(self, fault: Fault | None = None, /, **kwargs: Any) -> Fault:
        """Queue a fault, given as a ``Fault`` or as its fields; faults apply in FIFO order."""
        if fault is None:
            fault = Fault(**kwargs)
        elif kwargs:
            raise TypeError("pass either a Fault or its fields, not both")
        with self.lock:
            self._faults.append(dataclasses.replace(fault))
        return fault

    def clear_faults(self) -> None:
        """Forget every queued fault."""
        with self.lock:
            self._faults.clear()

    def faults(self) -> list[Fault]:
        """Copies of the queued faults, ``times`` being what is left of each."""
        with self.lock:
            return [dataclasses.replace(f) for f in self._faults]

    def take_fault(self, path: str) -> Fault | None:
        """Consume one use of the first queued fault matching ``path``."""
        with self.lock:
            for index, fault in enumerate(self._faults):
                if fault.matches(path):
                    fault.times -= 1
                    if fault.times <= 0:
                        del self._faults[index]
                    return dataclasses.replace(fault, times=1)
        return None

    # -- request log and rate-limit window ----------------------------------------------------

    def record_request(self, request: RecordedRequest) -> None:
        """Append one API request to the log."""
        with self.lock:
            self._requests.append(request)

    def requests(self, path: str | None = None) -> list[RecordedRequest]:
        """The logged API requests, oldest first, optionally only those for ``path``."""
        with self.lock:
            return [r for r in self._requests if path is None or r.path == path]

    def clear_requests(self) -> None:
        """Empty the request log."""
        with self.lock:
            self._requests.clear()

    def window_allowance(self) -> int:
        """Calls allowed per window: the per-minute limit spread evenly over the minute."""
        return max(1, math.floor(self.rate_limit * self.rate_limit_window_seconds / 60))

    def count_rate_limit(self, now: float) -> tuple[int, int]:
        """Count one call in the current window; returns (remaining, reset unix time).

        Remaining goes below zero once a window's share is used up (the caller answers 429
        when enforcing, and reports 0)."""
        # Intercom spreads its per-minute quota over fixed 10 s windows: 10,000 a minute is
        # 1,666 per 10 s window.
        window = self.rate_limit_window_seconds
        with self.lock:
            start = math.floor(now / window) * window
            if start != self._window_start:
                self._window_start, self._window_count = start, 0
            self._window_count += 1
            remaining = self.window_allowance() - self._window_count
        return remaining, math.ceil(start + window)
