"""Times an earlier release let lie in the future, and the rows that repair them.

An earlier release stored the time of a notification from the far future as it came: a
watermark there makes every genuine notification look older than it, and a sign-in time there
hides every real one. A baseline repairs such rows; this is what it writes, apart from the
diff (`app.sync.plan`) because it is a repair of old data, not part of what Intercom says.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.store import directory as store

logger = logging.getLogger(__name__)


@dataclass
class Repairs:
    """Rows an earlier release let a notification from the far future poison."""

    served: list[dict[str, Any]] = field(default_factory=list)  # a served value changes
    bookkeeping: list[dict[str, Any]] = field(default_factory=list)  # only watermarks change


def future_repairs(current: store.Directory, user_ids: set[str], now: datetime) -> Repairs:
    """Watermarks and sign-in or removal times later than `now` plus the allowed clock skew:
    a watermark that lies in the future makes every genuine notification look older than it,
    and a sign-in time there hides every real one. Watermarks are cleared (the next
    notification sets them again), sign-in times cleared, removal times set to now."""
    limit = now + store.MAX_FUTURE_SKEW
    limit_ts = int(limit.timestamp())
    repairs = Repairs()
    for uid in sorted(user_ids):
        user = current.users[uid]
        row: dict[str, Any] = {
            "id": uid,
            "event_watermark": _unless_future(user.event_watermark, limit_ts),
            "away_watermark": _unless_future(user.away_watermark, limit_ts),
            "last_logout_at": _unless_future(user.last_logout_at, limit),
        }
        login = _unless_future(user.last_login_at, limit)
        removed_at = now if user.removed_at is not None and user.removed_at > limit else None
        if login != user.last_login_at or removed_at is not None:
            row.update(last_login_at=login, removed_at=removed_at or user.removed_at)
            repairs.served.append(row)
        else:
            repairs.bookkeeping.append(row)
        logger.warning("teammate %s had times in the future; cleared them", uid)
    return repairs


def _unless_future(value: Any, limit: Any) -> Any:
    return None if value is not None and value > limit else value
