"""Snapshot serving: the cached `GET /api/v1/snapshot` and its 304 path under 8 connections,
each against a bare Starlette route serving the same bytes in the same run, and the cost of
rebuilding the body after a change (read + serialize + gzip)."""

from __future__ import annotations

import gzip
import time
from typing import Any

import orjson
from sqlalchemy import update

from app.simulator import SimulatorServer
from app.snapshot.cache import SnapshotCache
from app.snapshot.reference import build_snapshot
from app.snapshot.splice import serialize_snapshot
from app.store.engine import Database, create_database
from app.store.models import User, utcnow
from app.store.reads import read_snapshot
from app.store.versioning import USER, ChangeSet, lock_store_state, record_changes
from bench.common import (
    Context,
    check_load,
    client,
    get_request,
    load_spec,
    log,
    median,
    run_baseline,
    start_reference,
    start_service,
)
from bench.loadgen import run_load
from bench.sync import workspace_for
from harness.service import READ_TOKEN, SIM_SECRET, SIM_TOKEN, ServerProcess

AREA = "snapshot"
CONNECTIONS = 8
C1_HEADERS = {
    "Authorization": f"Bearer {READ_TOKEN}",
    "Accept-Encoding": "gzip",
    "User-Agent": "baton-http/bench",
}


def _fetch_body(service: ServerProcess, n_users: int, ctx: Context) -> tuple[bytes, str]:
    """The gzip bytes and ETag the service serves, checked for sense."""
    with (
        client(service) as http,
        http.stream("GET", "/api/v1/snapshot", headers={"Accept-Encoding": "gzip"}) as response,
    ):
        raw = b"".join(response.iter_raw())
        etag = response.headers["etag"]
        encoding = response.headers.get("content-encoding")
    if encoding != "gzip":
        ctx.report.fail(f"snapshot: asked for gzip, got Content-Encoding {encoding!r}")
        return raw, etag
    body = orjson.loads(gzip.decompress(raw))
    if len(body["users"]) != n_users:
        ctx.report.fail(f"snapshot lists {len(body['users'])} users, expected {n_users}")
    return raw, etag


def _pairs(
    ctx: Context,
    service: ServerProcess,
    reference: ServerProcess,
    headers: dict[str, str],
    expected: int,
    what: str,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Alternate service and reference windows, so each pair shares the machine's mood."""
    mine: list[dict[str, Any]] = []
    theirs: list[dict[str, Any]] = []
    for attempt in range(ctx.repeat):
        for server, bucket in ((service, mine), (reference, theirs)):
            spec = load_spec(
                ctx,
                server,
                get_request("/api/v1/snapshot", server, headers),
                connections=CONNECTIONS,
            )
            result = run_load(spec)
            label = "service" if server is service else "reference"
            check_load(ctx, f"{what} ({label})", result, expected)
            bucket.append(result)
            log(
                f"  {what} {label} {attempt + 1}/{ctx.repeat}: {result['rps']:.0f} req/s, "
                f"p99 {result['latency_ms']['p99']:.1f} ms"
            )
    return mine, theirs


def _throughput_figures(
    ctx: Context,
    name: str,
    mine: list[dict[str, Any]],
    theirs: list[dict[str, Any]],
    *,
    min_ratio: float,
    p99_target: float | None,
) -> None:
    ratios = [m["rps"] / t["rps"] for m, t in zip(mine, theirs, strict=True) if t["rps"]]
    ratio = median(ratios)
    ctx.target(
        AREA,
        f"{name}: requests/s at {CONNECTIONS} connections",
        median([m["rps"] for m in mine]),
        "req/s",
        target=f">= {min_ratio:.0%} of reference",
        ok=lambda _v: ratio >= min_ratio,
        reference=median([t["rps"] for t in theirs]),
        ratio=ratio,
        samples=[m["rps"] for m in mine],
        note="ratio = median of per-pair ratios",
    )
    p99s = [m["latency_ms"]["p99"] for m in mine]
    if p99_target is not None:
        ctx.target(
            AREA,
            f"{name}: p99 latency",
            median(p99s),
            "ms",
            target=f"< {p99_target:g} ms",
            ok=lambda v: v < p99_target,
            samples=p99s,
            reference=median([t["latency_ms"]["p99"] for t in theirs]),
        )
    else:
        ctx.figure(
            AREA,
            f"{name}: p99 latency",
            median(p99s),
            "ms",
            samples=p99s,
            reference=median([t["latency_ms"]["p99"] for t in theirs]),
        )


def _sign_in(db: Database, user_id: str) -> None:
    """What a `admin.logged_in` webhook does to the store: one user row and a new version."""
    with db.writing() as session:
        state = lock_store_state(session)
        session.execute(update(User).where(User.id == user_id).values(last_login_at=utcnow()))
        changes = ChangeSet()
        changes.upsert(USER, user_id)
        record_changes(session, state, changes)


def _rebuild(ctx: Context, database_url: str) -> None:
    """The work after a version change, timed in process against the service's store."""
    db = create_database(database_url)
    cache = SnapshotCache(db, roles_enabled=False)
    runs = ctx.plan.rebuilds
    cold: list[float] = []
    warm: list[float] = []
    warm_cpu: list[float] = []
    try:
        with db.reading() as session:
            rows = read_snapshot(session, include_removed=False)
        # The fast serializer must write exactly the bytes of the plain one.
        if serialize_snapshot(rows, roles_enabled=False) != orjson.dumps(
            build_snapshot(rows, roles_enabled=False)
        ):
            ctx.report.fail("snapshot: serialize_snapshot differs from orjson(build_snapshot)")
        for attempt in range(runs):
            # Cold: a process's first build. Warm: the build after the next change (a sign-in),
            # which may reuse what the previous build serialized.
            getattr(cache, "_memos", {}).clear()
            started = time.perf_counter()
            cache._build(False)
            cold.append(time.perf_counter() - started)
            _sign_in(db, rows.users[attempt % len(rows.users)].id)
            started, cpu = time.perf_counter(), time.process_time()
            built = cache._build(False)
            warm.append(time.perf_counter() - started)
            warm_cpu.append(time.process_time() - cpu)
            if built.version <= rows.header.version:
                ctx.report.fail("snapshot: the rebuild did not see the new version")
            # The gzip body is assembled from pieces compressed (or reused) separately.
            if gzip.decompress(built.gzipped) != built.raw:
                ctx.report.fail("snapshot: the gzip body does not decompress to the raw body")
    finally:
        db.dispose()
    ms = [t * 1000 for t in warm]
    ctx.target(
        AREA,
        "rebuild after a change (read+serialize+gzip)",
        median(ms),
        "ms",
        target="< 150 ms",
        ok=lambda v: v < 150,
        samples=ms,
        note=f"SnapshotCache._build after a sign-in; CPU {median(warm_cpu) * 1000:.0f} ms",
    )
    ctx.figure(
        AREA,
        "first build in a process",
        median(cold) * 1000,
        "ms",
        samples=[t * 1000 for t in cold],
    )


def run(ctx: Context) -> None:
    size = ctx.plan.workspace
    workspace = workspace_for(size)
    n_users = len(workspace.admins)
    with (
        SimulatorServer(workspace, access_token=SIM_TOKEN, client_secret=SIM_SECRET) as sim,
        ctx.backend.fresh_database(ctx.workdir) as url,
    ):
        service = start_service(url, sim, ctx.workdir, ctx.cores)
        reference: ServerProcess | None = None
        try:
            baseline = run_baseline(service)
            if baseline["status"] != "succeeded":
                ctx.report.fail(f"snapshot: the baseline did not succeed: {baseline}")
                return
            raw, etag = _fetch_body(service, n_users, ctx)
            ctx.figure(AREA, f"body size, gzip ({size:,} teammates)", len(raw) / 1024, "KiB")
            reference = start_reference(ctx.workdir, ctx.cores, body=raw, etag=etag)
            log(f"snapshot: {len(raw) / 1024:.0f} KiB gzip, etag {etag}")
            mine, theirs = _pairs(ctx, service, reference, C1_HEADERS, 200, "cached 200")
            _throughput_figures(
                ctx, "cached 200 (gzip)", mine, theirs, min_ratio=0.5, p99_target=50
            )
            conditional = {**C1_HEADERS, "If-None-Match": etag}
            mine, theirs = _pairs(ctx, service, reference, conditional, 304, "304")
            _throughput_figures(
                ctx, "304 Not Modified", mine, theirs, min_ratio=0.7, p99_target=None
            )
            _rebuild(ctx, url)
        finally:
            if reference is not None:
                reference.stop()
            service.stop()
