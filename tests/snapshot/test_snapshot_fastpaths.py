"""The shortcuts the snapshot path takes for speed answer exactly as the plain ways would: the
gzip body built from separately compressed pieces, the prepared snapshot response headers,
the access line logged without `Logger.info`, and the request ids."""

from __future__ import annotations

import gzip
import logging
import uuid
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
import pytest
from starlette.responses import Response

from app.api.c1 import snapshot_response
from app.api.middleware import _log_access, _new_request_id
from app.observability.logs import JsonFormatter
from app.snapshot.cache import SnapshotBody
from app.snapshot.piecewise_gzip import gzip_body
from app.snapshot.reference import build_snapshot
from app.snapshot.splice import SnapshotMemo, serialize_in_pieces
from app.store.reads import SnapshotRows, SnapshotUser
from app.store.versioning import StoreHeader

SIGNED_IN = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


class NamedRow(NamedTuple):
    id: str
    name: str | None


def _user(index: int, last_login_at: datetime | None = None) -> SnapshotUser:
    return SnapshotUser(
        id=f"{100000 + index}",
        name=f"Teammate {index}",
        email=f"t{index}@example.com",
        job_title=None,
        has_inbox_seat=True,
        away_mode_enabled=False,
        away_mode_reassign=False,
        role_id=None,
        account_type="human",
        last_login_at=last_login_at,
        removed_at=None,
        last_login_method="email_password" if last_login_at else None,
    )


def _rows(users: list[SnapshotUser], version: int) -> SnapshotRows:
    # Rows as SQLAlchemy returns them: anything with the columns as attributes and positions.
    teams: list[Any] = [NamedRow(f"t{n}", f"Team {n}") for n in range(40)]
    memberships = sorted((f"t{i % 40}", user.id) for i, user in enumerate(users))
    header = StoreHeader(
        version=version,
        version_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        last_sync_at=None,
        last_webhook_at=None,
        workspace_id="w1",
        workspace_name="Acme",
        workspace_region="US",
        cursor_key="k",
        change_log_pruned_through=0,
    )
    return SnapshotRows(header, users, teams, memberships, [])


def test_the_pieced_gzip_body_is_the_body_and_reuses_unchanged_pieces() -> None:
    users = [_user(i) for i in range(3000)]  # many users pieces, and several grants pieces
    memo = SnapshotMemo()
    first_rows = _rows(users, 1)
    raw, pieces = serialize_in_pieces(first_rows, roles_enabled=False, memo=memo)
    assert raw == orjson.dumps(build_snapshot(first_rows, roles_enabled=False))
    zipped = gzip_body(raw, pieces, memo)
    assert gzip.decompress(zipped) == raw
    assert len(pieces) > 20
    before = dict(memo.deflated)

    # A sign-in: one teammate changes, and with it one users piece (and the version, in the
    # head, which is never reused).
    users[1234] = _user(1234, last_login_at=SIGNED_IN)
    rows = _rows(users, 2)
    raw, pieces = serialize_in_pieces(rows, roles_enabled=False, memo=memo)
    zipped = gzip_body(raw, pieces, memo)
    assert gzip.decompress(zipped) == raw
    assert raw == orjson.dumps(build_snapshot(rows, roles_enabled=False))
    # The same bytes as compressing every piece afresh: what a poller receives does not depend
    # on what this process built before.
    fresh_raw, fresh_pieces = serialize_in_pieces(rows, roles_enabled=False, memo=None)
    assert fresh_raw == raw
    assert gzip_body(fresh_raw, fresh_pieces) == zipped
    reused = [key for key, deflated in memo.deflated.items() if before.get(key) is deflated]
    assert len(reused) >= len(memo.deflated) - 2


def test_an_empty_workspace_gzips_too() -> None:
    rows = _rows([], 1)
    raw, pieces = serialize_in_pieces(rows, roles_enabled=True, memo=SnapshotMemo())
    assert raw == orjson.dumps(build_snapshot(rows, roles_enabled=True))
    assert gzip.decompress(gzip_body(raw, pieces)) == raw


def _starlette_response(body: SnapshotBody, *, not_modified: bool, zipped: bool) -> Response:
    """How the snapshot answer used to be built, with Starlette's own header handling."""
    headers = {"ETag": body.etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
    if not_modified:
        return Response(status_code=304, headers=headers)
    if zipped:
        headers["Content-Encoding"] = "gzip"
        return Response(body.gzipped, media_type="application/json", headers=headers)
    return Response(body.raw, media_type="application/json", headers=headers)


@pytest.mark.parametrize(
    ("if_none_match", "accept_encoding", "not_modified", "zipped"),
    [
        ('"v7"', "gzip", True, False),
        ('W/"v6", "v7"', None, True, False),
        ("*", "gzip", True, False),
        ('"v6"', "gzip, deflate", False, True),
        (None, "br;q=1, gzip;q=0", False, False),
        (None, None, False, False),
    ],
)
def test_the_snapshot_answer_has_exactly_starlettes_headers(
    if_none_match: str | None, accept_encoding: str | None, not_modified: bool, zipped: bool
) -> None:
    body = SnapshotBody(version=7, etag='"v7"', raw=b'{"a":1}', gzipped=gzip.compress(b"x"))
    response = snapshot_response(body, if_none_match, accept_encoding)
    expected = _starlette_response(body, not_modified=not_modified, zipped=zipped)
    assert response.status_code == expected.status_code
    assert response.raw_headers == expected.raw_headers
    assert response.body == expected.body
    assert response.background is None


def test_the_access_record_is_the_one_logger_info_would_make(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    access = logging.getLogger("app.access")
    handler = Keep()
    access.addHandler(handler)
    monkeypatch.setattr(access, "level", logging.INFO)
    try:
        access.info("%s %s %d", "GET", "/api/v1/snapshot", 304, extra={"duration_ms": 0.5})
        _log_access("GET", "/api/v1/snapshot", 304, 0.0)
    finally:
        access.removeHandler(handler)
    plain, fast = records
    assert set(vars(plain)) == set(vars(fast))
    # Time and source location differ (this test called logger.info itself); all else is equal.
    source = {"pathname", "filename", "module", "lineno", "funcName"}
    variable = {"created", "msecs", "relativeCreated", "duration_ms", *source}
    for name in set(vars(plain)) - variable:
        assert getattr(fast, name) == getattr(plain, name), name
    assert fast.filename == "middleware.py"
    assert fast.getMessage() == "GET /api/v1/snapshot 304"
    assert isinstance(fast.duration_ms, float)  # type: ignore[attr-defined]
    line = orjson.loads(JsonFormatter().format(fast))
    assert set(line) == set(orjson.loads(JsonFormatter().format(plain)))


def test_request_ids_are_uuid4_hex() -> None:
    ids = {_new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    for value in ids:
        parsed = uuid.UUID(value)
        assert parsed.hex == value
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
