"""The snapshot body, built and serialized once per store version (and gzip-compressed once),
then served as bytes to every poller of that version (reliability rules R15, R16)."""

from __future__ import annotations

import asyncio
import sqlite3
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import orjson
from sqlalchemy.engine import make_url
from starlette.concurrency import run_in_threadpool

from app.core.gc_pause import gc_paused
from app.core.timefmt import iso
from app.snapshot import shapes
from app.store.engine import Database
from app.store.read_errors import NotSynced
from app.store.reads import SnapshotRows, read_snapshot
from app.store.versioning import read_header

T = TypeVar("T")


@dataclass(frozen=True)
class SnapshotBody:
    version: int
    etag: str
    raw: bytes
    gzipped: bytes


def build_snapshot(rows: SnapshotRows, *, roles_enabled: bool) -> dict[str, Any]:
    """The whole state of the world at `rows.header.version` (spec §3.3)."""
    links = _link(rows, roles_enabled=roles_enabled)
    users = [
        shapes.user_object(row, links.team_ids_by_user[row.id], roles_enabled=roles_enabled)
        for row in rows.users
    ]
    body = _body(rows, links, users, roles_enabled=roles_enabled)
    body["grants"] = (
        [shapes.team_grant(t, u) for t, u in links.team_grants]
        + [shapes.role_grant(r, u) for r, u in links.role_grants]
        + [shapes.workspace_grant(w, u) for w, u in links.workspace_grants]
    )
    return body


@dataclass
class SnapshotMemo:
    """What one build leaves for the next (of the same flavour): each user's JSON by its row
    and teams, and the memberships with what was derived from them, which most changes (a
    sign-in, an away-mode flip, a renamed teammate) leave as they were."""

    users: dict[Any, bytes] = field(default_factory=dict)
    link_inputs: tuple[Any, ...] | None = None
    links: _Links | None = None
    grants: bytes = b"[]"
    # The compressed form of each piece of the last body (see `gzip_body`), by piece key.
    deflated: dict[Any, bytes] = field(default_factory=dict)


# A piece of a serialized body: a key that stands for its bytes (equal keys, equal bytes; None
# for a piece never reused), and where those bytes are in the body.
Piece = tuple[Any, int, int]


def serialize_snapshot(
    rows: SnapshotRows, *, roles_enabled: bool, memo: SnapshotMemo | None = None
) -> bytes:
    """`orjson.dumps(build_snapshot(rows, …))`, byte for byte, in a fraction of the time.

    The users and grants, nearly all of a large body, go in as ready-made JSON. A grant's JSON
    is cut from `shapes.team_grant`/`role_grant`'s own output: per team (or role) that JSON
    split where the user id goes, joined with each member's escaped id. With a `memo`,
    whatever the previous build already serialized is reused when its inputs are equal, and
    the memo is left describing this build."""
    return _serialize(rows, roles_enabled=roles_enabled, memo=memo)[0]


def _serialize(
    rows: SnapshotRows, *, roles_enabled: bool, memo: SnapshotMemo | None
) -> tuple[bytes, list[Piece]]:
    """The body, and the pieces it is made of (for `gzip_body`)."""
    inputs = _link_inputs(rows, roles_enabled=roles_enabled) if memo is not None else None
    if memo is not None and memo.links is not None and memo.link_inputs == inputs:
        links, grants = memo.links, memo.grants
    else:
        links = _link(rows, roles_enabled=roles_enabled)
        parts = _grant_json(shapes.team_grant, links.team_grants)
        parts += _grant_json(shapes.role_grant, links.role_grants)
        parts += _grant_json(shapes.workspace_grant, links.workspace_grants)
        grants = _array(parts)
    known = memo.users if memo is not None else {}
    current: dict[Any, bytes] = {}
    users: list[bytes] = []
    # Where each users piece ends (an index into `users`): after a teammate whose id's CRC
    # has its low bits clear, so pieces hold ~128 teammates and a teammate added or removed
    # moves only the piece it is in. (CRC, not hash(): the same pieces in every process.)
    cuts: list[int] = []
    for row in rows.users:
        team_ids = links.team_ids_by_user[row.id]
        key = (row, *team_ids) if memo is not None else None
        found = known.get(key)
        if found is None:
            found = orjson.dumps(shapes.user_object(row, team_ids, roles_enabled=roles_enabled))
            # orjson's result keeps its working buffer (4 KiB for a small one); an exact copy
            # is what the memo keeps.
            found = bytes(memoryview(found)) if key is not None else found
        if key is not None:
            current[key] = found
        users.append(found)
        if not zlib.crc32(row.id.encode()) & _USER_PIECE_MASK:
            cuts.append(len(users))
    if memo is not None:
        memo.users, memo.link_inputs, memo.links, memo.grants = current, inputs, links, grants
    # The body is `head` + users + `middle` + grants + "}", exactly as orjson writes the whole
    # dict (compact, keys in insertion order): the two arrays are spliced in where orjson put
    # a placeholder.
    body = _body(rows, links, _SPLICE, roles_enabled=roles_enabled)
    keys = list(body)
    cut = keys.index("users") + 1
    head = orjson.dumps({key: body[key] for key in keys[:cut]})
    middle = orjson.dumps({**{key: body[key] for key in keys[cut:]}, "grants": _SPLICE})
    assert head.endswith(_SPLICED)
    assert middle.endswith(_SPLICED)
    head = head[: -len(_SPLICED)]
    middle = b"]," + middle[1 : -len(_SPLICED)]
    users_json = b"[" + b",".join(users)
    raw = b"".join((head, users_json, middle, grants, b"}"))
    return raw, _pieces(head, users, cuts, middle, grants)


_SPLICE = orjson.Fragment(b"0")
_SPLICED = b"0}"
_USER_PIECE_MASK = 0x7F
_GRANT_PIECE_BYTES = 256 * 1024


def _pieces(
    head: bytes, users: list[bytes], cuts: list[int], middle: bytes, grants: bytes
) -> list[Piece]:
    """The body cut into pieces whose keys say when a piece is the same as last time: users
    by the (memoized, so usually identical) JSON of their teammates, the grants by their
    ready-made array and offset, the teams and entitlements by their bytes."""
    pieces: list[Piece] = []
    at = len(head) + 1  # the users' "["
    pieces.append((None, 0, at))
    start = 0
    if not cuts or cuts[-1] != len(users):
        cuts.append(len(users))
    for end in cuts:
        if end == start:
            continue
        chunk = tuple(users[start:end])
        last = end == len(users)
        # Each teammate is followed by a comma, except the last one.
        size = sum(map(len, chunk)) + len(chunk) - (1 if last else 0)
        pieces.append(((last, chunk), at, at + size))
        at += size
        start = end
    pieces.append((middle, at, at + len(middle)))
    at += len(middle)
    for offset in range(0, len(grants), _GRANT_PIECE_BYTES):
        size = min(_GRANT_PIECE_BYTES, len(grants) - offset)
        pieces.append(((grants, offset), at, at + size))
        at += size
    pieces.append((None, at, at + 1))  # "}"
    return pieces


# What zlib writes before a gzip stream with mtime 0 at level 1 (gzip.compress(…, mtime=0)
# is zlib.compress with wbits=31), and the final, empty deflate block.
_GZIP_HEADER = zlib.compress(b"", 1, wbits=31)[:10]
_FINAL_BLOCK = zlib.compressobj(1, zlib.DEFLATED, -15).flush()


def gzip_body(raw: bytes, pieces: list[Piece], memo: SnapshotMemo | None = None) -> bytes:
    """A gzip member of `raw` whose deflate stream is each piece compressed on its own (a fresh
    compressor, ended with a sync flush: byte-aligned, and referring to nothing before it),
    one after the other, as pigz does. A piece whose key the memo holds from the previous
    build is not compressed again; after a sign-in that is all but one piece of the users
    and all of the grants. Level 1: a third of the CPU of level 6 for a body about a fifth
    larger; this runs after every change, and C1 polls far less often than webhooks change
    things."""
    known = memo.deflated if memo is not None else {}
    current: dict[Any, bytes] = {}
    view = memoryview(raw)
    out = [_GZIP_HEADER]
    for key, start, end in pieces:
        deflated = known.get(key) if key is not None else None
        if deflated is None:
            compressor = zlib.compressobj(1, zlib.DEFLATED, -15)
            deflated = compressor.compress(view[start:end]) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if key is not None:
            current[key] = deflated
        out.append(deflated)
    if memo is not None:
        memo.deflated = current
    out.append(_FINAL_BLOCK)
    out.append(struct.pack("<LL", zlib.crc32(raw), len(raw) & 0xFFFFFFFF))
    return b"".join(out)


def _link_inputs(rows: SnapshotRows, *, roles_enabled: bool) -> tuple[Any, ...]:
    """Everything `_link` reads; equal inputs give equal links."""
    users = tuple(
        (row.id, row.removed_at is None, row.role_id if roles_enabled else None)
        for row in rows.users
    )
    teams = tuple(row.id for row in rows.teams)
    roles = tuple(row.id for row in rows.roles) if roles_enabled else ()
    return (list(rows.memberships), users, teams, roles, rows.header.workspace_id)


def _array(items: list[bytes]) -> bytes:
    return b"".join((b"[", b",".join(items), b"]"))


_GROUP, _USER = "@@grant-group@@", "@@grant-user@@"  # nothing in them is escaped by JSON


def _grant_json(
    render: Callable[[str, str], dict[str, Any]], pairs: list[tuple[str, str]]
) -> list[bytes]:
    """The JSON of `render(group_id, user_id)` for every pair, in order. (JSON escapes
    character by character, so an escaped id can go inside a string like `team:{id}:member`.)"""
    template = orjson.dumps(render(_GROUP, _USER))
    pieces: dict[str, list[bytes]] = {}
    users: dict[str, bytes] = {}
    out: list[bytes] = []
    for group_id, user_id in pairs:
        split = pieces.get(group_id)
        if split is None:
            split = pieces[group_id] = template.replace(
                _GROUP.encode(), orjson.dumps(group_id)[1:-1]
            ).split(_USER.encode())
        user = users.get(user_id)
        if user is None:
            user = users[user_id] = orjson.dumps(user_id)[1:-1]
        out.append(user.join(split))
    return out


@dataclass
class _Links:
    """Who is in what, limited to what is served."""

    team_ids_by_user: dict[str, list[str]]
    members_by_team: dict[str, list[str]]
    team_grants: list[tuple[str, str]]  # (team id, user id), in grant order
    holders: dict[str, list[str]]  # role id -> user ids
    role_grants: list[tuple[str, str]]  # (role id, user id), in grant order
    workspace_grants: list[tuple[str, str]]  # (workspace id, user id), in user id order


def _link(rows: SnapshotRows, *, roles_enabled: bool) -> _Links:
    active = [row.id for row in rows.users if row.removed_at is None]
    active_ids = set(active)
    team_ids_by_user: dict[str, list[str]] = {row.id: [] for row in rows.users}
    members_by_team: dict[str, list[str]] = {row.id: [] for row in rows.teams}
    # Consistency guard: a membership is only served with both of its ends.
    team_grants = [
        pair for pair in rows.memberships if pair[1] in active_ids and pair[0] in members_by_team
    ]
    for team_id, user_id in team_grants:
        team_ids_by_user[user_id].append(team_id)
        members_by_team[team_id].append(user_id)
    holders: dict[str, list[str]] = {}
    role_grants: list[tuple[str, str]] = []
    if roles_enabled:
        holders = {row.id: [] for row in rows.roles}
        for row in rows.users:
            if row.role_id and row.removed_at is None and row.role_id in holders:
                holders[row.role_id].append(row.id)
        role_grants = [
            (role_id, user_id) for role_id, user_ids in holders.items() for user_id in user_ids
        ]
    # Every active teammate is a member of the workspace (a removed one has no grant).
    workspace_id = rows.header.workspace_id
    workspace_grants = [(workspace_id, uid) for uid in active] if workspace_id is not None else []
    return _Links(
        team_ids_by_user, members_by_team, team_grants, holders, role_grants, workspace_grants
    )


def _body(rows: SnapshotRows, links: _Links, users: Any, *, roles_enabled: bool) -> dict[str, Any]:
    """The body up to its entitlements; the caller adds the grants, which come last."""
    teams = [
        shapes.team_object(row.id, row.name, links.members_by_team[row.id]) for row in rows.teams
    ]
    entitlements = [shapes.team_entitlement(row.id, row.name) for row in rows.teams]
    header = rows.header
    body: dict[str, Any] = {
        "workspace": shapes.workspace_object(
            header.workspace_id, header.workspace_name, header.workspace_region
        ),
        "version": header.version,
        "synced_at": iso(header.version_at or header.last_sync_at),
        "resource_types": shapes.resource_types(roles_enabled=roles_enabled),
        "users": users,
        "teams": teams,
    }
    if roles_enabled:
        body["roles"] = [shapes.role_object(r.id, r.name, links.holders[r.id]) for r in rows.roles]
        entitlements += [shapes.role_entitlement(r.id, r.name) for r in rows.roles]
    body["workspaces"] = []
    if header.workspace_id is not None:
        body["workspaces"].append(
            shapes.workspace_resource(
                header.workspace_id, header.workspace_name, header.workspace_region
            )
        )
        entitlements.append(
            shapes.workspace_entitlement(header.workspace_id, header.workspace_name)
        )
    body["entitlements"] = entitlements
    return body


class _SharedRead(Generic[T]):
    """Runs a blocking read in the threadpool on behalf of many concurrent callers at once.

    A caller never reuses a read that began before it arrived: it joins the next read to
    start, so it sees every commit made before it asked, exactly as a read of its own would,
    while the callers that arrive during one read share a single trip to the threadpool
    (under load that hop, not the query, is what costs)."""

    def __init__(self, read: Callable[[], T]) -> None:
        self._read = read
        self._next: asyncio.Future[T] | None = None  # joined by callers, not started yet
        self._task: asyncio.Task[None] | None = None  # the read in progress

    async def __call__(self) -> T:
        future = self._next
        if future is None:
            future = self._next = asyncio.get_running_loop().create_future()
            # Consume the outcome even if every waiter is cancelled (no "never retrieved").
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            if self._task is None:
                self._start()
        # shield: one caller giving up must not cancel the read the others wait for.
        return await asyncio.shield(future)

    def _start(self) -> None:
        future, self._next = self._next, None
        assert future is not None
        self._task = asyncio.get_running_loop().create_task(self._run(future))

    async def _run(self, future: asyncio.Future[T]) -> None:
        try:
            result = await run_in_threadpool(self._read)
        except asyncio.CancelledError:  # the loop is shutting down: nobody gets an answer
            self._task = None
            for waiting in (future, self._next):
                if waiting is not None:
                    waiting.cancel()
            self._next = None
            raise
        except Exception as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)
        self._task = None
        if self._next is not None:
            self._start()


class _SqliteCommitCounter:
    """SQLite only: `PRAGMA data_version`, asked on a connection of our own, changes whenever
    any other connection, in this process or another, commits to the file. Asking costs a few
    microseconds and never waits (busy timeout 0), so it runs on the event loop: while it
    stands still, the store header read before it is still current and no query is needed."""

    def __init__(self, db: Database) -> None:
        url = make_url(db.url)
        database = url.database or ""
        self._path = None if database in ("", ":memory:") or url.query else database
        self._connection: sqlite3.Connection | None = None

    def read(self) -> int | None:
        """The counter now, or None when it cannot be read (then read the header instead)."""
        if self._path is None:
            return None
        try:
            if self._connection is None:
                self._connection = sqlite3.connect(
                    self._path, timeout=0, isolation_level=None, check_same_thread=False
                )
            row = self._connection.execute("PRAGMA data_version").fetchone()
        except sqlite3.Error:
            self.close()
            return None
        return int(row[0])

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class SnapshotCache:
    """Per process; every request checks the shared store version, so replicas follow it."""

    def __init__(self, db: Database, *, roles_enabled: bool) -> None:
        self._db = db
        self._roles_enabled = roles_enabled
        self._entries: dict[bool, SnapshotBody] = {}
        # Serialized users of the last build per flavour, reused when unchanged (builds are
        # serialized by `_lock`, so one build at a time touches these).
        self._memos: dict[bool, SnapshotMemo] = {}
        self._lock = asyncio.Lock()
        self._check = _SharedRead(self._current)
        self._commits = _SqliteCommitCounter(db) if db.is_sqlite else None
        # (commit counter, (version, synced)) with the header read after the counter was.
        self._known: tuple[int, tuple[int, bool]] | None = None

    def _current(self) -> tuple[int, bool]:
        with self._db.reading() as session:
            header = read_header(session)
        return header.version, header.last_sync_at is not None

    async def _version(self) -> tuple[int, bool]:
        counter = self._commits.read() if self._commits is not None else None
        known = self._known
        if counter is not None and known is not None and known[0] == counter:
            return known[1]  # nothing was committed since that header was read
        # The shared read starts after this point, so it is at least as new as `counter`.
        current = await self._check()
        if counter is not None:
            self._known = (counter, current)
        return current

    def close(self) -> None:
        if self._commits is not None:
            self._commits.close()

    async def get(self, *, include_removed: bool) -> SnapshotBody:
        version, synced = await self._version()
        if not synced:
            raise NotSynced
        entry = self._entries.get(include_removed)
        if entry is not None and entry.version == version:
            return entry
        async with self._lock:
            entry = self._entries.get(include_removed)
            if entry is not None and entry.version >= version:
                return entry
            entry = await run_in_threadpool(self._build, include_removed)
            self._entries[include_removed] = entry
            return entry

    def _build(self, include_removed: bool) -> SnapshotBody:
        memo = self._memos.setdefault(include_removed, SnapshotMemo())
        with gc_paused():
            with self._db.reading() as session:
                rows = read_snapshot(session, include_removed=include_removed)
            raw, pieces = _serialize(rows, roles_enabled=self._roles_enabled, memo=memo)
            gzipped = gzip_body(raw, pieces, memo)
        version = rows.header.version
        suffix = "-all" if include_removed else ""
        return SnapshotBody(version=version, etag=f'"v{version}{suffix}"', raw=raw, gzipped=gzipped)
