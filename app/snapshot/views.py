"""The paginated views, single resources and change feed of the C1 API.

Pages are keyset pages ordered by id, so paging while webhooks change the store never skips
or repeats an item that did not change; each page is read in one transaction and states the
version it saw."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from app.core.timefmt import iso
from app.snapshot import shapes
from app.store import reads
from app.store.cursors import decode_cursor, encode_cursor
from app.store.read_errors import Gone, InvalidCursor, NotFound
from app.store.reads import require_synced
from app.store.versioning import StoreHeader, changes_since, read_header


def _synced_header(session: Session) -> StoreHeader:
    header = read_header(session)
    require_synced(header)
    return header


def _position(header: StoreHeader, listing: str, cursor: str | None) -> Any:
    return decode_cursor(header.cursor_key, listing, cursor) if cursor else None


def _page(
    header: StoreHeader, listing: str, items: list[dict[str, Any]], limit: int, last_position: Any
) -> dict[str, Any]:
    next_cursor = (
        encode_cursor(header.cursor_key, listing, last_position)
        if len(items) == limit and last_position is not None
        else None
    )
    return {"items": items, "next_cursor": next_cursor, "version": header.version}


def _str_position(position: Any) -> str | None:
    if position is None:
        return None
    if not isinstance(position, str):
        raise InvalidCursor("the cursor is malformed")
    return position


def _pair_position(position: Any) -> tuple[str, str] | None:
    if position is None:
        return None
    if (
        not isinstance(position, list)
        or len(position) != 2
        or not all(isinstance(p, str) for p in position)
    ):
        raise InvalidCursor("the cursor is malformed")
    return position[0], position[1]


def users_page(
    session: Session, *, cursor: str | None, limit: int, include_removed: bool, roles_enabled: bool
) -> dict[str, Any]:
    header = _synced_header(session)
    listing = "users+removed" if include_removed else "users"
    after = _str_position(_position(header, listing, cursor))
    rows, team_ids = reads.page_users(
        session, after=after, limit=limit, include_removed=include_removed
    )
    items = [shapes.user_object(r, team_ids[r.id], roles_enabled=roles_enabled) for r in rows]
    return _page(header, listing, items, limit, rows[-1].id if rows else None)


def teams_page(session: Session, *, cursor: str | None, limit: int) -> dict[str, Any]:
    header = _synced_header(session)
    after = _str_position(_position(header, "teams", cursor))
    rows, members = reads.page_teams(session, after=after, limit=limit)
    items = [shapes.team_object(r.id, r.name, members[r.id]) for r in rows]
    return _page(header, "teams", items, limit, rows[-1].id if rows else None)


def roles_page(
    session: Session, *, cursor: str | None, limit: int, roles_enabled: bool
) -> dict[str, Any]:
    header = _synced_header(session)
    after = _str_position(_position(header, "roles", cursor))
    if not roles_enabled:
        # Roles a 2.16+ sync left in the store are not served before 2.16 (nor in the snapshot).
        return _page(header, "roles", [], limit, None)
    rows, holders = reads.page_roles(session, after=after, limit=limit)
    items = [shapes.role_object(r.id, r.name, holders[r.id]) for r in rows]
    return _page(header, "roles", items, limit, rows[-1].id if rows else None)


def team_members_page(
    session: Session, team_id: str, *, cursor: str | None, limit: int
) -> dict[str, Any]:
    header = _synced_header(session)
    if not reads.has_team(session, team_id):
        raise NotFound(f"there is no team {team_id}")
    return _user_id_page(
        header,
        f"members:{team_id}",
        cursor,
        limit,
        lambda after: reads.team_member_ids(session, team_id, after=after, limit=limit),
    )


def role_members_page(
    session: Session, role_id: str, *, cursor: str | None, limit: int, roles_enabled: bool
) -> dict[str, Any]:
    """The holders of one role: what baton-http reads per role instead of every grant."""
    header = _synced_header(session)
    if not roles_enabled or not reads.has_role(session, role_id):
        raise NotFound(f"there is no role {role_id}")
    return _user_id_page(
        header,
        f"role-members:{role_id}",
        cursor,
        limit,
        lambda after: reads.role_holder_ids(session, role_id, after=after, limit=limit),
    )


def _user_id_page(
    header: StoreHeader,
    listing: str,
    cursor: str | None,
    limit: int,
    read_ids: Callable[[str | None], list[str]],
) -> dict[str, Any]:
    """A page of `{"user_id"}` items after the cursor's user id."""
    user_ids = read_ids(_str_position(_position(header, listing, cursor)))
    items = [{"user_id": uid} for uid in user_ids]
    return _page(header, listing, items, limit, user_ids[-1] if user_ids else None)


_GRANT_PHASES = ("team", "role", "workspace")


def grants_page(
    session: Session, *, cursor: str | None, limit: int, roles_enabled: bool
) -> dict[str, Any]:
    """Team-member grants, then role-assignment grants, then workspace-member grants, each in
    key order (the snapshot's order). A cursor names the phase and the last key read."""
    header = _synced_header(session)
    position = _position(header, "grants", cursor)
    phase = "team"
    after: tuple[str, str] | None = None
    if position is not None:
        if not isinstance(position, list) or len(position) != 3 or position[0] not in _GRANT_PHASES:
            raise InvalidCursor("the cursor is malformed")
        phase = position[0]
        after = _pair_position(position[1:])
    items: list[dict[str, Any]] = []
    last: list[str] | None = None
    for current in _GRANT_PHASES[_GRANT_PHASES.index(phase) :]:
        room = limit - len(items)
        if room <= 0:
            break
        start = after if current == phase else None
        for group_id, user_id in _grant_keys(
            session, header, current, after=start, limit=room, roles_enabled=roles_enabled
        ):
            items.append(_GRANT_SHAPES[current](group_id, user_id))
            last = [current, group_id, user_id]
    return _page(header, "grants", items, limit, last)


_GRANT_SHAPES: dict[str, Callable[[str, str], dict[str, Any]]] = {
    "team": shapes.team_grant,
    "role": shapes.role_grant,
    "workspace": shapes.workspace_grant,
}


def _grant_keys(
    session: Session,
    header: StoreHeader,
    phase: str,
    *,
    after: tuple[str, str] | None,
    limit: int,
    roles_enabled: bool,
) -> list[tuple[str, str]]:
    """Up to `limit` (group id, user id) keys of one kind of grant after `after`."""
    if phase == "team":
        return [(t, u) for t, u in reads.page_memberships(session, after=after, limit=limit)]
    if phase == "role":
        if not roles_enabled:
            return []
        return [(r, u) for r, u in reads.page_role_holders(session, after=after, limit=limit)]
    workspace_id = header.workspace_id
    if workspace_id is None or (after is not None and after[0] != workspace_id):
        return []
    user_ids = reads.active_user_ids(
        session, after=after[1] if after is not None else None, limit=limit
    )
    return [(workspace_id, uid) for uid in user_ids]


def _workspace_header(session: Session, workspace_id: str) -> StoreHeader:
    header = _synced_header(session)
    if header.workspace_id != workspace_id:
        raise NotFound(f"there is no workspace {workspace_id}")
    return header


def workspaces_page(session: Session, *, cursor: str | None, limit: int) -> dict[str, Any]:
    """The workspace as a one-item listing, for connectors that list every resource type."""
    header = _synced_header(session)
    after = _str_position(_position(header, "workspaces", cursor))
    workspace_id = header.workspace_id
    items: list[dict[str, Any]] = []
    if workspace_id is not None and (after is None or workspace_id > after):
        items.append(
            shapes.workspace_resource(workspace_id, header.workspace_name, header.workspace_region)
        )
    return _page(header, "workspaces", items, limit, workspace_id if items else None)


def workspace_view(session: Session, workspace_id: str) -> dict[str, Any]:
    header = _workspace_header(session, workspace_id)
    return shapes.workspace_resource(workspace_id, header.workspace_name, header.workspace_region)


def workspace_members_page(
    session: Session, workspace_id: str, *, cursor: str | None, limit: int
) -> dict[str, Any]:
    """The workspace's members (every active teammate): its `member` grants, a page at a time."""
    header = _workspace_header(session, workspace_id)
    return _user_id_page(
        header,
        f"workspace-members:{workspace_id}",
        cursor,
        limit,
        lambda after: reads.active_user_ids(session, after=after, limit=limit),
    )


def user_view(session: Session, user_id: str, *, roles_enabled: bool) -> dict[str, Any]:
    _synced_header(session)
    found = reads.read_user(session, user_id)
    if found is None:
        raise NotFound(f"there is no teammate {user_id}")
    row, team_ids = found
    return shapes.user_object(row, team_ids, roles_enabled=roles_enabled)


def team_view(session: Session, team_id: str) -> dict[str, Any]:
    _synced_header(session)
    found = reads.read_team(session, team_id)
    if found is None:
        raise NotFound(f"there is no team {team_id}")
    row, member_ids = found
    return shapes.team_object(row.id, row.name, member_ids)


def role_view(session: Session, role_id: str, *, roles_enabled: bool) -> dict[str, Any]:
    _synced_header(session)
    rows, holders = reads.page_roles(session, after=None, limit=1, only=role_id)
    if not rows or not roles_enabled:
        raise NotFound(f"there is no role {role_id}")
    return shapes.role_object(rows[0].id, rows[0].name, holders[rows[0].id])


def change_feed(session: Session, *, since: int, limit: int) -> dict[str, Any]:
    header = _synced_header(session)
    if since < header.change_log_pruned_through:
        raise Gone(
            f"changes up to version {header.change_log_pruned_through} are no longer kept; "
            "fetch /api/v1/snapshot and continue from its version",
            code="since_too_old",
        )
    if since > header.version:
        raise Gone(
            f"version {since} is newer than the store ({header.version}); the store may have "
            "been restored from a backup: fetch /api/v1/snapshot again",
            code="since_ahead_of_store",
        )
    rows = changes_since(session, since=since, limit=limit)
    changes = [
        {
            "version": r.version,
            "resource_type": r.resource_type,
            "resource_id": r.resource_id,
            "op": r.op,
            "at": iso(r.at),
        }
        for r in rows
    ]
    next_since = rows[-1].version if rows else since
    return {"changes": changes, "next_since": next_since, "version": header.version}
