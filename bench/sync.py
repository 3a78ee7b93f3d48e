"""Baseline sync against the simulator: end to end through the real service process, the
store-apply step on its own, a no-change re-sync, the server's peak memory, and how the times
grow from 1k to 10k to 50k teammates."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from app.intercom.client import IntercomClient
from app.intercom.retries import RetryPolicy
from app.simulator import SimulatorServer, SimWorkspace, generate_workspace
from app.store.engine import create_database
from app.store.migrate import upgrade_to_head
from app.sync.baseline import FetchedWorkspace, apply_baseline, fetch_workspace
from bench.common import (
    Context,
    log,
    median,
    readiness,
    run_baseline,
    start_service,
)
from harness.service import SIM_SECRET, SIM_TOKEN

AREA = "sync"


def workspace_for(n_admins: int) -> SimWorkspace:
    """`n` teammates, n/10 teams, 3–7 teams each (10k → 1,000 teams, ~50,000 memberships)."""
    return generate_workspace(n_admins, max(10, n_admins // 10), memberships_per_admin=(3, 7))


async def fetch(sim: SimulatorServer) -> FetchedWorkspace:
    client = IntercomClient(
        base_url=sim.url,
        access_token=sim.access_token,
        api_version="2.14",
        timeout_seconds=120,
        retry=RetryPolicy(
            max_attempts=1, backoff_initial_seconds=0.01, max_rate_limit_wait_seconds=1
        ),
    )
    try:
        return await fetch_workspace(client, roles_supported=False)
    finally:
        await client.aclose()


@dataclass
class SizeResult:
    size: int
    end_to_end: list[float] = field(default_factory=list)
    no_change: list[float] = field(default_factory=list)
    peak_rss_mb: list[float] = field(default_factory=list)
    fetch: list[float] = field(default_factory=list)
    apply_first: list[float] = field(default_factory=list)
    apply_no_change: list[float] = field(default_factory=list)
    apply_first_cpu: list[float] = field(default_factory=list)
    apply_no_change_cpu: list[float] = field(default_factory=list)


def _service_runs(ctx: Context, sim: SimulatorServer, result: SizeResult, runs: int) -> None:
    for attempt in range(runs):
        with ctx.backend.fresh_database(ctx.workdir) as url:
            service = start_service(url, sim, ctx.workdir, ctx.cores)
            try:
                run = run_baseline(service)
                if run["status"] != "succeeded":
                    ctx.report.fail(f"baseline of {result.size} teammates: {run}")
                    return
                # Peak RSS of the whole process life so far: start-up, migration and baseline.
                result.peak_rss_mb.append(service.memory_kb().get("VmHWM", 0) / 1024)
                result.end_to_end.append(run["server_s"])
                version = readiness(service)["version"]
                again = run_baseline(service)
                after = readiness(service)["version"]
                if again["status"] != "succeeded":
                    ctx.report.fail(f"no-change re-sync of {result.size} teammates: {again}")
                elif after != version or any(again["stats"].values()):
                    ctx.report.fail(
                        f"a re-sync with nothing new changed the store: version {version} -> "
                        f"{after}, stats {again['stats']}"
                    )
                result.no_change.append(again["server_s"])
                log(
                    f"  {result.size} teammates, run {attempt + 1}/{runs}: baseline "
                    f"{run['server_s']:.2f}s, no-change {again['server_s']:.2f}s, "
                    f"peak RSS {result.peak_rss_mb[-1]:.0f} MB"
                )
            finally:
                service.stop()


def _apply_runs(ctx: Context, sim: SimulatorServer, result: SizeResult, runs: int) -> None:
    for _ in range(runs):
        started = time.perf_counter()
        fetched = asyncio.run(fetch(sim))
        result.fetch.append(time.perf_counter() - started)
        with ctx.backend.fresh_database(ctx.workdir) as url:
            upgrade_to_head(url)
            db = create_database(url)
            try:
                started, cpu = time.perf_counter(), time.process_time()
                with db.writing() as session:  # the commit counts: it is part of the apply
                    first = apply_baseline(session, fetched)
                result.apply_first.append(time.perf_counter() - started)
                result.apply_first_cpu.append(time.process_time() - cpu)
                started, cpu = time.perf_counter(), time.process_time()
                with db.writing() as session:
                    again = apply_baseline(session, fetched)
                result.apply_no_change.append(time.perf_counter() - started)
                result.apply_no_change_cpu.append(time.process_time() - cpu)
                if again.version_after != first.version_after:
                    ctx.report.fail("apply_baseline of unchanged data bumped the version")
            finally:
                db.dispose()


def _warm_up(ctx: Context) -> None:
    """One small baseline first, so that imports and SQLAlchemy's statement caches are not
    billed to the first measured size."""
    with SimulatorServer(
        workspace_for(50), access_token=SIM_TOKEN, client_secret=SIM_SECRET
    ) as sim:
        _apply_runs(ctx, sim, SizeResult(50), 1)


def run(ctx: Context) -> None:
    sizes = ctx.plan.sync_sizes
    main_size = sizes[1]
    results: dict[int, SizeResult] = {}
    _warm_up(ctx)
    for size in sizes:
        # The largest size takes long: one run there is enough to see the growth.
        runs = ctx.repeat if size <= main_size else 1
        log(f"sync: {size} teammates, {runs} run(s)")
        workspace = workspace_for(size)
        result = SizeResult(size)
        with SimulatorServer(workspace, access_token=SIM_TOKEN, client_secret=SIM_SECRET) as sim:
            _apply_runs(ctx, sim, result, runs)
            if size == main_size or ctx.plan.service_every_size:
                _service_runs(ctx, sim, result, runs)
        results[size] = result

    main = results[main_size]
    label = f"{main_size:,}"
    ctx.target(
        AREA,
        f"baseline end to end ({label} teammates)",
        median(main.end_to_end),
        "s",
        target="< 5 s",
        ok=lambda v: v < 5,
        samples=main.end_to_end,
        note="started_at -> finished_at of the run record",
    )
    ctx.target(
        AREA,
        f"store apply, empty store ({label})",
        median(main.apply_first),
        "s",
        target="< 1 s",
        ok=lambda v: v < 1,
        samples=main.apply_first,
        note=f"apply_baseline + commit, in process; CPU {median(main.apply_first_cpu):.2f} s",
    )
    ctx.figure(
        AREA, f"fetch /me /admins /teams ({label})", median(main.fetch), "s", samples=main.fetch
    )
    ctx.target(
        AREA,
        f"no-change re-sync end to end ({label})",
        median(main.no_change),
        "s",
        target="< 1.5 s, version unchanged",
        ok=lambda v: v < 1.5,
        samples=main.no_change,
    )
    ctx.figure(
        AREA,
        f"store apply, nothing changed ({label})",
        median(main.apply_no_change),
        "s",
        samples=main.apply_no_change,
        note=f"CPU {median(main.apply_no_change_cpu):.2f} s",
    )
    ctx.target(
        AREA,
        f"server peak RSS after baseline ({label})",
        median(main.peak_rss_mb),
        "MB",
        target="< 300 MB",
        ok=lambda v: v < 300,
        samples=main.peak_rss_mb,
        note="VmHWM of the intercom-sync serve process",
    )

    small, large = results[sizes[0]], results[sizes[2]]
    for size in (sizes[0], sizes[2]):
        r = results[size]
        for name, values, unit, note in (
            (f"baseline end to end ({size:,} teammates)", r.end_to_end, "s", ""),
            (
                f"store apply, empty store ({size:,})",
                r.apply_first,
                "s",
                f"CPU {median(r.apply_first_cpu):.2f} s" if r.apply_first_cpu else "",
            ),
            (
                f"store apply, nothing changed ({size:,})",
                r.apply_no_change,
                "s",
                f"CPU {median(r.apply_no_change_cpu):.2f} s" if r.apply_no_change_cpu else "",
            ),
            (f"no-change re-sync ({size:,})", r.no_change, "s", ""),
            (f"server peak RSS after baseline ({size:,})", r.peak_rss_mb, "MB", ""),
        ):
            if values:  # the smoke plan runs the service at the middle size only
                ctx.figure(AREA, name, median(values), unit, samples=values, note=note)
    factor = sizes[2] / sizes[1]
    limit = factor * 1.2
    picks: tuple[tuple[str, Callable[[SizeResult], list[float]]], ...] = (
        ("baseline end to end", lambda r: r.end_to_end),
        ("store apply", lambda r: r.apply_first),
        ("no-change re-sync", lambda r: r.no_change),
    )
    for what, pick in picks:
        if not (pick(small) and pick(main) and pick(large)):
            continue
        growth = median(pick(large)) / median(pick(main))
        ctx.target(
            AREA,
            f"growth {sizes[2]:,}/{sizes[1]:,}: {what}",
            growth,
            "x",
            target=f"<= {limit:g} (linear = {factor:g})",
            ok=lambda v: v <= limit,
            note=f"{sizes[1]:,}/{sizes[0]:,}: {median(pick(main)) / median(pick(small)):.2f}x",
        )
