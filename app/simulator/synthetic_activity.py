"""A year of sign-ins computed on demand: the simulator's synthetic activity log.

A benchmark asks for millions of entries; storing them would make the simulator's memory grow
with the log it serves, so ``SyntheticLog`` computes any window's entries (and their count) from
the teammates, the first day and the number of days. The recorded entries live in
``activity_log.SimActivityLog``, which merges the two.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from app.simulator.activity import SimActivity

# Access events a synthetic log mixes in between the sign-ins, in turn.
SYNTHETIC_ACCESS_TYPES = (
    "admin_permission_change",
    "seat_change",
    "app_team_membership_modification",
    "admin_login_failure",
    "role_change",
)
_SIGN_IN_START = 8 * 3600
_SIGN_IN_SPAN = 9 * 3600


@dataclass(frozen=True)
class SyntheticLog:
    """One sign-in per teammate per working day (Monday to Friday, UTC), plus
    ``access_events_per_day`` access events, between 08:00 and 17:00 UTC, over ``days`` days
    from ``start`` (a midnight). Nothing is stored: a window's entries are computed."""

    admins: Sequence[tuple[str, str]]  # (id, email)
    start: int
    days: int
    access_events_per_day: int = 0

    def __post_init__(self) -> None:
        if self.start % 86400:
            raise ValueError("a synthetic log starts at midnight UTC")
        if not self.admins:
            raise ValueError("a synthetic log needs teammates")
        if self.per_day > _SIGN_IN_SPAN:
            raise ValueError("too many entries per day for one a second")

    @property
    def per_day(self) -> int:
        return len(self.admins) + self.access_events_per_day

    @property
    def step(self) -> int:
        return max(1, _SIGN_IN_SPAN // self.per_day)

    def _working(self, day: int) -> bool:
        # 1970-01-01 was a Thursday (weekday 3, Monday being 0).
        return (3 + self.start // 86400 + day) % 7 < 5

    def _day_range(self, day: int, lo: int, hi: int) -> range:
        base = self.start + day * 86400 + _SIGN_IN_START
        first = max(0, math.ceil((lo - base) / self.step))
        last = min(self.per_day - 1, (hi - base) // self.step)
        return range(first, last + 1) if last >= first else range(0)

    def _days(self, lo: int, hi: int) -> range:
        first = max(0, (lo - self.start) // 86400)
        last = min(self.days - 1, (hi - self.start) // 86400)
        return range(first, last + 1) if last >= first else range(0)

    def _type_of(self, k: int) -> str:
        n = len(self.admins)
        if k < n:
            return "admin_login_success"
        return SYNTHETIC_ACCESS_TYPES[(k - n) % len(SYNTHETIC_ACCESS_TYPES)]

    def _count_in(self, ks: range, types: frozenset[str] | None) -> int:
        if types is None:
            return len(ks)
        n = len(self.admins)
        sign_ins = max(0, min(ks.stop, n) - ks.start) if "admin_login_success" in types else 0
        return sign_ins + sum(
            1 for k in range(max(ks.start, n), ks.stop) if self._type_of(k) in types
        )

    def count(self, lo: int, hi: int, types: frozenset[str] | None) -> int:
        """How many entries fall in [lo, hi] (with one of ``types``)."""
        return sum(
            self._count_in(self._day_range(day, lo, hi), types)
            for day in self._days(lo, hi)
            if self._working(day)
        )

    def slice(
        self, lo: int, hi: int, types: frozenset[str] | None, offset: int, limit: int
    ) -> list[SimActivity]:
        """Entries ``offset`` to ``offset + limit`` of the window, oldest first."""
        out: list[SimActivity] = []
        skipped = 0
        for day in self._days(lo, hi):
            if not self._working(day):
                continue
            ks = self._day_range(day, lo, hi)
            in_day = self._count_in(ks, types)
            if skipped + in_day <= offset:
                skipped += in_day
                continue
            for k in ks:
                if types is not None and self._type_of(k) not in types:
                    continue
                if skipped < offset:
                    skipped += 1
                    continue
                out.append(self.entry(day, k))
                if len(out) >= limit:
                    return out
        return out

    def entry(self, day: int, k: int) -> SimActivity:
        """The ``k``-th entry of ``day``."""
        n = len(self.admins)
        created_at = self.start + day * 86400 + _SIGN_IN_START + k * self.step
        if k < n:
            admin_id, email = self.admins[(k + day) % n]
            return SimActivity(
                id=f"{day:08x}-0000-4000-8000-{k:012x}",
                created_at=created_at,
                activity_type="admin_login_success",
                admin_id=admin_id,
                email=email,
                ip="203.0.113.7",
                description=f"{email} successfully logged in",
                metadata={"sign_in_method": "email_password"},
            )
        j = k - n
        admin_id, email = self.admins[(j * 37 + day) % n]
        activity_type = SYNTHETIC_ACCESS_TYPES[j % len(SYNTHETIC_ACCESS_TYPES)]
        return SimActivity(
            id=f"{day:08x}-0001-4000-8000-{k:012x}",
            created_at=created_at,
            activity_type=activity_type,
            admin_id=admin_id,
            email=email,
            ip="203.0.113.9",
            description=f"{email}: {activity_type}",
            metadata={"before": {"state": "before"}, "after": {"state": "after"}},
        )
