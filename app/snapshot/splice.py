"""The snapshot body serialized fast: `orjson.dumps(reference.build_snapshot(...))` byte for
byte, with the users and grants (nearly all of a large body) spliced in as ready-made JSON and,
through a memo, reused from the previous build when their inputs are unchanged. It exists
apart from the reference build, which states what the body is, because this is how the body is
made quickly; it also cuts the body into the pieces `piecewise_gzip` compresses."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.snapshot import shapes
from app.snapshot.piecewise_gzip import Piece
from app.snapshot.reference import Links, body_before_grants, link, link_inputs
from app.store.reads import SnapshotRows


@dataclass
class SnapshotMemo:
    """What one build leaves for the next (of the same flavour): each user's JSON by its row
    and teams, and the memberships with what was derived from them, which most changes (a
    sign-in, an away-mode flip, a renamed teammate) leave as they were."""

    users: dict[Any, bytes] = field(default_factory=dict)
    link_inputs: tuple[Any, ...] | None = None
    links: Links | None = None
    grants: bytes = b"[]"
    # The compressed form of each piece of the last body (see `gzip_body`), by piece key.
    deflated: dict[Any, bytes] = field(default_factory=dict)


def serialize_snapshot(
    rows: SnapshotRows, *, roles_enabled: bool, memo: SnapshotMemo | None = None
) -> bytes:
    """`orjson.dumps(build_snapshot(rows, …))`, byte for byte, in a fraction of the time.

    The users and grants, nearly all of a large body, go in as ready-made JSON. A grant's JSON
    is cut from `shapes.team_grant`/`role_grant`'s own output: per team (or role) that JSON
    split where the user id goes, joined with each member's escaped id. With a `memo`,
    whatever the previous build already serialized is reused when its inputs are equal, and
    the memo is left describing this build."""
    return serialize_in_pieces(rows, roles_enabled=roles_enabled, memo=memo)[0]


def serialize_in_pieces(
    rows: SnapshotRows, *, roles_enabled: bool, memo: SnapshotMemo | None
) -> tuple[bytes, list[Piece]]:
    """The body, and the pieces it is made of (for `gzip_body`)."""
    inputs = link_inputs(rows, roles_enabled=roles_enabled) if memo is not None else None
    if memo is not None and memo.links is not None and memo.link_inputs == inputs:
        links, grants = memo.links, memo.grants
    else:
        links = link(rows, roles_enabled=roles_enabled)
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
    body = body_before_grants(rows, links, _SPLICE, roles_enabled=roles_enabled)
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
