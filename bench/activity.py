"""`python -m bench.activity [--teammates 10000] [--days 365]`: the activity-log reader at
scale (issue 20.5).

A workspace of `--teammates` teammates whose log holds one sign-in per teammate per working day
for `--days` days (plus `--access-per-day` access events a day), served by the simulator with
Intercom's rate limit enforced (10,000 calls a minute, spread over 10 s windows; a call past
its window's share answers 429). One baseline, then:

- the backfill: the first read, `--days` back, with the 2.16 search form (250 entries a call);
- an incremental read of the next day's entries.

Prints entries/s, calls, 429s met and peak RSS, and writes them to
bench/results/activity.json. The simulator runs in the same process (a thread), so the peak
RSS includes it; the synthetic log is computed per page, never held whole.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from app.activity.reader import ActivityLogReader
from app.intercom.client import IntercomClient
from app.intercom.retries import RetryPolicy
from app.observability.metrics import INTERCOM_REQUESTS
from app.settings import load_settings
from app.simulator import SimulatorServer, generate_workspace
from app.simulator.synthetic_activity import SyntheticLog
from app.store.engine import create_database
from app.store.migrate import upgrade_to_head
from app.sync.baseline import apply_baseline, fetch_workspace
from harness.service import SIM_TOKEN

RESULTS = Path(__file__).resolve().parent / "results" / "activity.json"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rate_limited_calls() -> float:
    total = 0.0
    for endpoint in ("activity_logs", "activity_logs_search"):
        total += INTERCOM_REQUESTS.labels(endpoint, "429")._value.get()
    return total


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.activity", description=__doc__)
    parser.add_argument("--teammates", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--access-per-day", type=int, default=200)
    parser.add_argument("--api-version", default="2.16")
    parser.add_argument("--database-url", help="default: a SQLite file in a temporary folder")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where the JSON goes")
    parser.add_argument(
        "--every-minutes",
        type=int,
        default=15,
        help="then read every this many minutes through the following working day",
    )
    args = parser.parse_args(argv)

    # The backfill reads at midnight; the day the incremental read finds is the one after.
    today = int(time.time()) // 86400 * 86400
    while (3 + today // 86400) % 7 >= 5:  # a working day, so it has sign-ins (1970-01-01: Thu)
        today -= 86400
    now = datetime.fromtimestamp(today, UTC)
    workspace = generate_workspace(
        args.teammates, max(10, args.teammates // 10), memberships_per_admin=(1, 3)
    )
    workspace.api_version = args.api_version
    workspace.enforce_rate_limit = True  # 10,000 calls a minute, as Intercom
    admins = [(a.id, a.email) for a in workspace.admins.values()]
    workspace.activity.synthetic = SyntheticLog(
        admins=admins,
        start=today - args.days * 86400,
        days=args.days,
        access_events_per_day=args.access_per_day,
    )
    with (
        tempfile.TemporaryDirectory() as folder,
        SimulatorServer(workspace, access_token=SIM_TOKEN) as sim,
    ):
        url = args.database_url or f"sqlite:///{folder}/activity.db"
        upgrade_to_head(url)
        db = create_database(url)
        settings = load_settings(
            _env_file=None,
            database_url=url,
            intercom_api_base_url=sim.url,
            intercom_access_token=SIM_TOKEN,
            intercom_api_version=args.api_version,
            activity_log_backfill_days=min(730, args.days),
        )

        def client() -> IntercomClient:
            return IntercomClient(
                base_url=sim.url,
                access_token=SIM_TOKEN,
                api_version=args.api_version,
                timeout_seconds=120,
                retry=RetryPolicy(max_attempts=8, max_rate_limit_wait_seconds=15),
            )

        async def baseline() -> None:
            async with client() as c:
                fetched = await fetch_workspace(c, roles_supported=True)
            with db.writing() as session:
                apply_baseline(session, fetched, force=True, max_removal_fraction=1.0)

        asyncio.run(baseline())
        reader = ActivityLogReader(db, settings, client)
        backfill_from = today - min(730, args.days) * 86400
        total = workspace.activity.synthetic.count(backfill_from, today, None)
        rss_before = peak_rss_mib()
        started = time.perf_counter()
        backfill = asyncio.run(reader.read(now=now))
        backfill_seconds = time.perf_counter() - started
        rss_backfill = peak_rss_mib()
        limited = rate_limited_calls()

        # The next day: the log grows by a day, one read covers it (and the overlap).
        workspace.activity.synthetic = SyntheticLog(
            admins=admins,
            start=today - args.days * 86400,
            days=args.days + 1,
            access_events_per_day=args.access_per_day,
        )
        tomorrow = now + timedelta(days=1)
        next_day = workspace.activity.synthetic.count(today, today + 86400, None)
        started = time.perf_counter()
        incremental = asyncio.run(reader.read(now=tomorrow))
        incremental_seconds = time.perf_counter() - started

        # The day after, read as the reconcile schedule would: every `--every-minutes`.
        day_after = today + 86400
        while (3 + day_after // 86400) % 7 >= 5:
            day_after += 86400
        workspace.activity.synthetic = SyntheticLog(
            admins=admins,
            start=today - args.days * 86400,
            days=args.days + 1 + (day_after - today) // 86400,
            access_events_per_day=args.access_per_day,
        )
        step = args.every_minutes * 60
        scheduled = []
        for moment in range(day_after + step, day_after + 86400 + 1, step):
            scheduled.append(asyncio.run(reader.read(now=datetime.fromtimestamp(moment, UTC))))
        schedule_calls = [r.calls for r in scheduled]
        db.dispose()

    result = {
        "teammates": args.teammates,
        "days": args.days,
        "api_version": args.api_version,
        "log_entries": total,
        "backfill": {
            "status": backfill.status,
            "entries": backfill.entries,
            "calls": backfill.calls,
            "windows": backfill.windows,
            "seconds": round(backfill_seconds, 1),
            "entries_per_second": round(backfill.entries / backfill_seconds),
            "calls_per_minute": round(backfill.calls / backfill_seconds * 60),
            "rate_limited_calls": limited,
            "sign_ins_applied": backfill.sign_ins_applied,
            "access_events_stored": backfill.access_events_stored,
            "peak_rss_mib_before": round(rss_before),
            "peak_rss_mib": round(rss_backfill),
        },
        "incremental_day": {
            "status": incremental.status,
            "day_entries": next_day,
            "entries": incremental.entries,
            "calls": incremental.calls,
            "seconds": round(incremental_seconds, 2),
            "sign_ins_applied": incremental.sign_ins_applied,
        },
        "every_minutes": {
            "minutes": args.every_minutes,
            "reads": len(scheduled),
            "failed": sum(r.status != "ok" for r in scheduled),
            "entries": sum(r.entries for r in scheduled),
            "calls": sum(schedule_calls),
            "max_calls_per_read": max(schedule_calls),
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
