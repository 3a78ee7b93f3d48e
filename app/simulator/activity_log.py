"""The simulator's activity log: recorded entries, kept sorted by time, plus an optional
synthetic log, read one time window and one page at a time.

Entries recorded through the control plane are kept in memory; a synthetic log
(``synthetic_activity.SyntheticLog``) is computed on demand. Entries are served oldest first.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field

from app.simulator.activity import SimActivity
from app.simulator.synthetic_activity import SyntheticLog

MAX_WINDOW_ENTRIES_MATERIALIZED = 400_000


@dataclass
class SimActivityLog:
    """Recorded entries (sorted by time) plus an optional synthetic log."""

    _entries: list[SimActivity] = field(default_factory=list)
    _keys: list[tuple[int, str]] = field(default_factory=list)
    _ids: set[str] = field(default_factory=set)
    synthetic: SyntheticLog | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, entry: SimActivity) -> bool:
        """Add an entry; False when one with its id is already there."""
        with self.lock:
            if entry.id in self._ids:
                return False
            key = (entry.created_at, entry.id)
            index = bisect.bisect(self._keys, key)
            self._keys.insert(index, key)
            self._entries.insert(index, entry)
            self._ids.add(entry.id)
            return True

    def clear(self) -> None:
        with self.lock:
            self._entries.clear()
            self._keys.clear()
            self._ids.clear()
            self.synthetic = None

    def entries(self) -> list[SimActivity]:
        with self.lock:
            return list(self._entries)

    def window(
        self,
        lo: int,
        hi: int,
        *,
        types: frozenset[str] | None,
        page: int,
        per_page: int,
    ) -> tuple[list[SimActivity], int]:
        """One page (1-based) of the entries in [lo, hi], oldest first, and the total count."""
        with self.lock:
            start = bisect.bisect_left(self._keys, (lo, ""))
            stop = bisect.bisect_left(self._keys, (hi + 1, ""))
            recorded = [
                e for e in self._entries[start:stop] if types is None or e.activity_type in types
            ]
            synthetic = self.synthetic
        offset = (page - 1) * per_page
        if synthetic is None:
            return recorded[offset : offset + per_page], len(recorded)
        total = synthetic.count(lo, hi, types) + len(recorded)
        if not recorded:
            return synthetic.slice(lo, hi, types, offset, per_page), total
        # Both kinds in one window: merge them in time order (tests, not benchmarks, do this).
        if total > MAX_WINDOW_ENTRIES_MATERIALIZED:
            raise ValueError("window too large to merge recorded and synthetic entries")
        merged = sorted(
            [*synthetic.slice(lo, hi, types, 0, total), *recorded],
            key=lambda e: (e.created_at, e.id),
        )
        return merged[offset : offset + per_page], total
