"""A baseline: fetch the whole workspace, then apply it to the store as one diff.

Fetching happens first and completely; only then does one transaction load what the store
holds, diff it with the fetched workspace (`app.sync.plan`, a pure function) and write the
difference (reliability rule R7). Unchanged rows are not touched, so a baseline that finds
nothing new leaves the version, and every ETag, as it was. A teammate that a webhook changed
after this fetch began is left alone: the webhook is newer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from app.core.gc_pause import gc_paused, gc_paused_at_most
from app.intercom.client import IntercomClient
from app.store import directory as store
from app.store.bulk import bulk_write_cache
from app.store.models import StoreState, utcnow
from app.store.versioning import ChangeSet, lock_store_state, record_changes, set_workspace
from app.sync.guards import MassRemovalBlocked, WorkspaceChanged
from app.sync.plan import (
    GHOST_TOMBSTONE_DAYS,
    BaselinePlan,
    FetchedWorkspace,
    StoredWorkspace,
    SyncStats,
    diff_baseline,
)

# What callers of a baseline need, from the modules it is made of.
__all__ = [
    "BaselinePlan",
    "BaselineResult",
    "FetchedWorkspace",
    "MassRemovalBlocked",
    "SyncStats",
    "WorkspaceChanged",
    "apply_baseline",
    "fetch_workspace",
    "load_stored",
    "plan_baseline",
    "write_baseline",
]

logger = logging.getLogger(__name__)


@dataclass
class BaselineResult:
    stats: SyncStats
    version_before: int
    version_after: int
    changes: ChangeSet = field(default_factory=ChangeSet)
    # Items Intercom listed that the store cannot hold, left as they were.
    warnings: list[dict[str, str]] = field(default_factory=list)


# Longest the collector stays paused for a fetch (see `fetch_workspace`).
FETCH_GC_PAUSE_SECONDS = 30.0


async def fetch_workspace(client: IntercomClient, *, roles_supported: bool) -> FetchedWorkspace:
    """`GET /me`, `/admins` and `/teams`, in that order; raises on any failure."""
    started = utcnow()
    # Parsing the lists keeps every teammate and team model alive, and the full collections
    # that this growth triggers walk all of them again and again, so the fetch grew faster
    # than the workspace (docs/performance.md has the figures). The parsed models are acyclic.
    # Other requests keep running meanwhile (this awaits), so the pause is capped: a fetch
    # stuck in retries must not leave the whole process without a collector.
    with gc_paused_at_most(FETCH_GC_PAUSE_SECONDS):
        workspace = await client.get_workspace()
        logger.info("fetched workspace %s", workspace.id_code)
        admins = await client.list_admins()
        logger.info("fetched %d teammates", len(admins))
        teams = await client.list_teams()
        logger.info("fetched %d teams", len(teams))
    return FetchedWorkspace(workspace, admins, teams, started, roles_supported)


def apply_baseline(
    session: Session,
    fetched: FetchedWorkspace,
    *,
    force: bool = False,
    max_removal_fraction: float = 0.25,
    keep_ghost_tombstones_for: timedelta = GHOST_TOMBSTONE_DAYS,
) -> BaselineResult:
    """Make the store equal to `fetched`, in the caller's transaction. Raises
    MassRemovalBlocked when the brake applies, and WorkspaceChanged when `fetched` is another
    workspace than the store's, both before writing anything."""
    # The diff creates a few hundred thousand short-lived tuples, strings and dicts, none of
    # them cyclic. The collections they trigger walk every object alive, including the whole
    # fetched workspace and the loaded directory, a cost that grows with the workspace
    # (docs/performance.md has the figures).
    with gc_paused(), bulk_write_cache(session):
        state = lock_store_state(session)
        plan = plan_baseline(
            session,
            state,
            fetched,
            max_removal_fraction=max_removal_fraction,
            keep_ghost_tombstones_for=keep_ghost_tombstones_for,
        )
        if plan.blocked is not None and not force:
            raise plan.blocked
        return write_baseline(session, state, fetched, plan)


def plan_baseline(
    session: Session,
    state: StoreState,
    fetched: FetchedWorkspace,
    *,
    max_removal_fraction: float,
    keep_ghost_tombstones_for: timedelta = GHOST_TOMBSTONE_DAYS,
) -> BaselinePlan:
    """The diff `apply_baseline` writes, reading the store only. Raises WorkspaceChanged when
    `fetched` is another workspace than the store's."""
    now = utcnow()
    return diff_baseline(
        load_stored(session, state, now),
        fetched,
        now=now,
        max_removal_fraction=max_removal_fraction,
        keep_ghost_tombstones_for=keep_ghost_tombstones_for,
    )


def load_stored(session: Session, state: StoreState, now: datetime) -> StoredWorkspace:
    """What the store holds, as plain data for `diff_baseline` at `now`."""
    directory = store.load_directory(session)
    unseen, in_future = store.users_to_look_at(session, now)
    return StoredWorkspace(state.workspace_id, state.version, directory, unseen, in_future)


def write_baseline(
    session: Session, state: StoreState, fetched: FetchedWorkspace, plan: BaselinePlan
) -> BaselineResult:
    """Write `plan` in the caller's transaction, which holds the writer lock on `state`; the
    brake is the caller's to apply first."""
    version, current = plan.version, plan.current
    # Writes, in an order the foreign keys accept; repairs before the updates that may
    # re-activate the same rows.
    store.update_users(session, plan.repairs.served)
    store.update_users(session, plan.repairs.bookkeeping)
    store.upsert_teams(session, plan.new_teams, plan.renamed, version=version)
    store.upsert_roles(session, plan.new_roles, plan.renamed_roles, version=version)
    store.insert_users(session, plan.new_users, version=version)
    store.update_users(session, plan.changed_rows)
    store.mark_seen_by_baseline(session, plan.newly_seen)
    store.remove_memberships(session, plan.pairs_removed)
    store.delete_users(session, plan.expired_ghosts)
    store.add_memberships(
        session, plan.pairs_added, into_empty_store=not current.users and not current.memberships
    )
    store.delete_teams(session, plan.gone_teams)
    store.delete_roles(session, plan.gone_roles)

    set_workspace(
        session,
        state,
        plan.changes,
        workspace_id=fetched.workspace.id_code,
        name=fetched.workspace.name,
        region=fetched.workspace.region,
    )
    version_after = record_changes(session, state, plan.changes, at=plan.now)
    return BaselineResult(
        plan.stats,
        plan.version_before,
        version_after,
        plan.changes,
        plan.warnings,
    )
