"""Reads Intercom's admin activity log after each successful baseline.

From the stored cursor (the first time, `ACTIVITY_LOG_BACKFILL_DAYS` back) up to the moment of
reading, in windows of at most 30 days: with API 2.16+ `POST /admins/activity_logs/search`
asking only for the types kept (250 a page), before that `GET /admins/activity_logs` (20 a
page), each following `pages.next`. Per window, access events are stored page by page
(deduplicated on the entry id) and the newest sign-in of each teammate is kept in memory (one
per teammate, so memory is bounded by the workspace, not the log); when the window's last page
is in, the sign-ins are applied and the cursor moves to the window's end in one transaction.
A failure leaves the cursor where it was: the next read redoes that window, and the stored
events it meets again are skipped by id.

Nothing here can fail a baseline: every error ends in the cursor row (`/readyz` problems
`activity_log_forbidden` on 401/403, `activity_log_failing` otherwise).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.concurrency import run_in_threadpool

from app.intercom.activity_log import LogEntry, parse_entry
from app.intercom.activity_types import EVENT_TYPES_READ, SIGN_IN_SUCCESS, is_access_event
from app.intercom.client import IntercomClient
from app.intercom.errors import IntercomAuthError, IntercomBadResponse, IntercomError
from app.settings import Settings, api_version_supports_roles
from app.store import activity as store
from app.store.engine import Database
from app.store.models import utcnow

logger = logging.getLogger(__name__)

WINDOW = timedelta(days=30)
# Entries can become visible in the log a little after their `created_at`: each read starts
# this much before the cursor (what it reads again is skipped by id or is no newer).
LATE_ENTRY_OVERLAP = timedelta(minutes=10)
SEARCH_PER_PAGE = 250
# A log that keeps answering `next` beyond this many pages in one window is not believed.
MAX_PAGES_PER_WINDOW = 100_000

FORBIDDEN = "activity_log_forbidden"
FAILING = "activity_log_failing"


@dataclass
class ReadOutcome:
    status: str  # ok | failed | skipped
    error_code: str | None = None
    read_to: datetime | None = None
    entries: int = 0
    calls: int = 0
    windows: int = 0
    access_events_stored: int = 0
    sign_ins_applied: int = 0
    refused_future: int = 0


def uses_search(api_version: str) -> bool:
    """`POST /admins/activity_logs/search` exists from 2.16 (and in Preview/Unstable)."""
    return api_version_supports_roles(api_version)


def windows(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """[start, end] cut into consecutive windows of at most `WINDOW`."""
    out: list[tuple[datetime, datetime]] = []
    lo = start
    while lo < end:
        hi = min(lo + WINDOW, end)
        out.append((lo, hi))
        lo = hi
    return out


class ActivityLogReader:
    """One per process; `read()` never raises (bar cancellation) and runs one read at a time."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        client_factory: Callable[[], IntercomClient],
    ) -> None:
        self._db = db
        self._settings = settings
        self._client_factory = client_factory
        self._lock = asyncio.Lock()

    async def read(self, *, now: datetime | None = None) -> ReadOutcome:
        if self._lock.locked():
            return ReadOutcome("skipped")
        async with self._lock:
            try:
                return await self._read(now or utcnow())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The store itself failed (recording the attempt or the outcome): still never
                # the baseline's failure. The kind only: a store error can carry parameters.
                logger.warning("reading the activity log failed: %s", _message(exc), exc_info=False)
                return ReadOutcome("failed", error_code=FAILING)

    async def _read(self, now: datetime) -> ReadOutcome:
        outcome = ReadOutcome("ok")
        await run_in_threadpool(self._write, lambda s: store.record_attempt(s, at=now))
        try:
            client = self._client_factory()
            try:
                await self._read_windows(client, now, outcome)
            finally:
                await client.aclose()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            code = FORBIDDEN if isinstance(exc, IntercomAuthError) else FAILING
            message = _message(exc)
            if code == FORBIDDEN:
                message += (
                    "; give the Intercom app the 'Read admin activity logs' permission "
                    "(teammates and teams go on syncing without it)"
                )
            logger.warning("reading the activity log failed (%s): %s", code, message)
            await run_in_threadpool(
                self._write, lambda s: store.record_failure(s, code=code, message=message)
            )
            outcome.status, outcome.error_code = "failed", code
        else:
            await run_in_threadpool(self._write, store.clear_failure)
            logger.info(
                "activity log read to %s: %d entries, %d calls, %d sign-ins applied, "
                "%d access events stored, %d refused as dated in the future",
                outcome.read_to.isoformat() if outcome.read_to else None,
                outcome.entries,
                outcome.calls,
                outcome.sign_ins_applied,
                outcome.access_events_stored,
                outcome.refused_future,
            )
        retention = timedelta(days=self._settings.access_event_retention_days)
        await run_in_threadpool(
            self._write, lambda s: store.prune_access_events(s, older_than=now - retention)
        )
        return outcome

    def _write(self, fn: Callable[[Any], object]) -> None:
        with self._db.writing() as session:
            fn(session)

    async def _read_windows(
        self, client: IntercomClient, now: datetime, outcome: ReadOutcome
    ) -> None:
        def cursor() -> store.CursorView:
            with self._db.reading() as session:
                return store.read_cursor(session)

        state = await run_in_threadpool(cursor)
        backfill = timedelta(days=self._settings.activity_log_backfill_days)
        start = (state.read_to - LATE_ENTRY_OVERLAP) if state.read_to else now - backfill
        start = max(start, now - backfill)
        search = uses_search(self._settings.intercom_api_version)
        parts = windows(start, now)
        for index, (lo, hi) in enumerate(parts):
            last = index == len(parts) - 1
            await self._read_window(
                client, lo, hi, now=now, search=search, outcome=outcome, last=last
            )
            outcome.windows += 1
            outcome.read_to = hi

    async def _read_window(
        self,
        client: IntercomClient,
        lo: datetime,
        hi: datetime,
        *,
        now: datetime,
        search: bool,
        outcome: ReadOutcome,
        last: bool,
    ) -> None:
        newest: dict[str, store.SignIn] = {}
        count = 0
        latest_allowed = now + store.MAX_FUTURE
        # A backfill may reach further back than access events are kept: not stored at all.
        oldest_kept = now - timedelta(days=self._settings.access_event_retention_days)
        async for items in _pages(client, lo, hi, search=search, outcome=outcome):
            access: list[LogEntry] = []
            for item in items:
                entry = parse_entry(item)
                if entry is None:
                    continue
                count += 1
                if entry.at > latest_allowed:
                    outcome.refused_future += 1
                    continue
                if entry.activity_type == SIGN_IN_SUCCESS:
                    if entry.actor_id is None:
                        continue
                    known = newest.get(entry.actor_id)
                    if known is None or entry.at > known.at:
                        newest[entry.actor_id] = store.SignIn(
                            entry.actor_id, entry.at, entry.sign_in_method
                        )
                elif is_access_event(entry.activity_type) and entry.at >= oldest_kept:
                    access.append(entry)
            if access:
                stored = await run_in_threadpool(self._store_events, access, now)
                outcome.access_events_stored += stored

        def finish(session: Any) -> None:
            outcome.sign_ins_applied += store.apply_sign_ins(session, newest)
            store.advance_cursor(session, read_to=hi, entries=count, now=now)
            if last:
                # With the cursor at the moment of reading, so /readyz never shows the read
                # done but the last one's failure still standing.
                store.clear_failure(session)

        await run_in_threadpool(self._write, finish)
        outcome.entries += count

    def _store_events(self, entries: list[LogEntry], now: datetime) -> int:
        with self._db.writing() as session:
            return store.store_access_events(session, entries, source="log", now=now)


async def _pages(
    client: IntercomClient,
    lo: datetime,
    hi: datetime,
    *,
    search: bool,
    outcome: ReadOutcome,
) -> AsyncIterator[list[Any]]:
    """The entries of [lo, hi], a page at a time, following `pages.next`."""
    after, before = int(lo.timestamp()), int(hi.timestamp())
    page = 1
    starting_after: str | None = None
    for _ in range(MAX_PAGES_PER_WINDOW):
        if search:
            body: dict[str, Any] = {
                "created_at_after": after,
                "created_at_before": before,
                "event_types": list(EVENT_TYPES_READ),
                "per_page": SEARCH_PER_PAGE,
                "page": page,
            }
            if starting_after is not None:
                body["starting_after"] = starting_after
            data = await client.request_json(
                "/admins/activity_logs/search", endpoint="activity_logs_search", json_body=body
            )
        else:
            params: dict[str, str | int] = {"created_at_after": after, "created_at_before": before}
            if starting_after is not None:
                params["starting_after"] = starting_after
            elif page > 1:
                params["page"] = page
            data = await client.request_json(
                "/admins/activity_logs", endpoint="activity_logs", params=params
            )
        outcome.calls += 1
        items, next_page = _parse_page(data)
        yield items
        if next_page is None or not items:
            return
        page += 1
        starting_after = next_page or None
    raise IntercomBadResponse(
        f"the activity log kept answering pages.next past {MAX_PAGES_PER_WINDOW} pages"
    )


def _parse_page(data: Any) -> tuple[list[Any], str | None]:
    """(entries, the next page's `starting_after`, "" for "by page number", or None at the
    end). `pages.next` is an object (`{"starting_after"}`) in Intercom's schema, a URL in
    older answers: only its query is used, never its host."""
    if not isinstance(data, dict) or not isinstance(data.get("activity_logs"), list):
        raise IntercomBadResponse("the activity log answered without an 'activity_logs' list")
    pages = data.get("pages")
    nxt = pages.get("next") if isinstance(pages, dict) else None
    if not nxt:
        return data["activity_logs"], None
    if isinstance(nxt, dict):
        token = nxt.get("starting_after")
        return data["activity_logs"], token if isinstance(token, str) and token else ""
    if isinstance(nxt, str):
        query = parse_qs(urlsplit(nxt).query)
        token = (query.get("starting_after") or [""])[0]
        return data["activity_logs"], token
    raise IntercomBadResponse("the activity log answered a 'pages.next' of an unknown shape")


def _message(exc: Exception) -> str:
    if isinstance(exc, IntercomError):
        return exc.message  # written without secrets
    # Anything else (a store error, say) could carry bound parameters: name its kind only.
    return f"unexpected {type(exc).__name__} while reading the activity log"
