"""What stops a baseline before it writes anything: the mass-removal brake and a token that now
reads another workspace.

Both are decided by the diff (`app.sync.plan`) and raised by the caller that would write it, so
they live apart from either: the run record, the CLI and the dry run all report them the same
way.
"""

from __future__ import annotations

from typing import Any

MASS_REMOVAL_MIN_USERS = 5
FORCE_HINT = "POST /resync?force=true, or intercom-sync sync --force"


class MassRemovalBlocked(Exception):
    """The run would remove too many teammates at once; nothing was applied."""

    code = "mass_removal_blocked"

    def __init__(
        self,
        message: str,
        *,
        would_remove: int,
        active_users: int,
        teammates: list[dict[str, str | None]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.would_remove = would_remove
        self.active_users = active_users
        # Who it would remove (`{"id", "name", "email"}`), for the run record and the CLI.
        self.teammates = teammates or []


class WorkspaceChanged(Exception):
    """The token now reads another workspace than the one the store holds; nothing was applied.

    Applying it would serve one workspace's teammates as removed and another's as added, and
    C1 would see a mix of two workspaces: a store holds one workspace, always."""

    code = "workspace_changed"

    def __init__(self, stored: str, fetched: str) -> None:
        self.message = (
            f"the store holds Intercom workspace {stored}, but INTERCOM_ACCESS_TOKEN now reads "
            f"workspace {fetched}; nothing was applied. If {fetched} is the workspace to "
            f"serve, point DATABASE_URL at a new, empty store for it; otherwise restore the "
            f"access token of workspace {stored}."
        )
        super().__init__(self.message)
        self.stored = stored
        self.fetched = fetched


def who(user_id: str, fields: dict[str, Any]) -> dict[str, str | None]:
    """A teammate as the brake names it: `{"id", "name", "email"}`."""
    return {"id": user_id, "name": fields.get("name"), "email": fields.get("email")}


def mass_removal_brake(
    teammates: list[dict[str, str | None]],
    active_users: int,
    fetched_users: int,
    max_fraction: float,
) -> MassRemovalBlocked | None:
    would_remove = len(teammates)
    if fetched_users == 0 and active_users > 0:
        return MassRemovalBlocked(
            f"Intercom returned no teammates while {active_users} are stored; nothing was "
            "applied. Check the token's workspace, then resync with force if this is real "
            f"({FORCE_HINT}).",
            would_remove=would_remove,
            active_users=active_users,
            teammates=teammates,
        )
    if would_remove > MASS_REMOVAL_MIN_USERS and would_remove > max_fraction * active_users:
        return MassRemovalBlocked(
            f"this run would remove {would_remove} of {active_users} teammates, more than "
            f"MAX_REMOVAL_FRACTION={max_fraction:g} allows; nothing was applied. If it is real, "
            f"resync with force to apply it ({FORCE_HINT}).",
            would_remove=would_remove,
            active_users=active_users,
            teammates=teammates,
        )
    return None
