"""Webhook intake and apply: signed deliveries per second at 16 connections against an
HMAC-only reference route, receipt-to-visible latency of marker teammates while that load runs,
the applier's events per second on a pre-filled inbox, and the server's memory across many
deliveries."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx

from app.intercom.signature import sign_body
from app.simulator import SimulatorServer, SimWorkspace
from app.store import inbox
from app.store.engine import create_database
from app.store.migrate import upgrade_to_head
from app.sync.baseline import apply_baseline
from app.webhooks.inbox_drainer import apply_pending_batch
from bench.common import (
    Context,
    check_load,
    load_spec,
    log,
    median,
    readiness,
    run_baseline,
    start_reference,
    start_service,
)
from bench.events import admin_sample, delivery_body, marker_body, pending_events
from bench.loadgen import LoadRun, percentile, run_load
from bench.sync import fetch, workspace_for
from harness.service import READ_TOKEN, SIM_SECRET, SIM_TOKEN, ServerProcess
from harness.waiting import wait_for

AREA = "webhooks"
CONNECTIONS = 16
MARKER_EVERY_SECONDS = 0.25


class _Deliveries:
    """Hands out disjoint index ranges, so every delivery of the area has its own notification
    id and a newer `created_at` than every earlier one."""

    def __init__(self, workspace: SimWorkspace) -> None:
        self.admins = admin_sample(workspace)
        self.app_id = workspace.id_code
        # In the past: ranges of a million indexes lie ahead of it, and a notification created
        # more than 5 minutes after its receipt is refused.
        self.base_created_at = int(time.time()) - 100_000_000
        self.next_start = 0

    def request(self, tag: str, span: int = 1_000_000) -> dict[str, Any]:
        start = self.next_start
        self.next_start += span
        return {
            "kind": "webhooks",
            "secret": SIM_SECRET,
            "admins": self.admins,
            "app_id": self.app_id,
            "tag": tag,
            "base_created_at": self.base_created_at,
            "start": start,
        }


class _Markers(threading.Thread):
    """While the load runs: every quarter second, a brand-new teammate is announced by webhook,
    and `GET /api/v1/users/{id}` is polled until it answers 200."""

    def __init__(
        self,
        service: ServerProcess,
        app_id: str,
        team_id: str,
        start_after: float,
        stop_at: float,
        first: int,
    ) -> None:
        super().__init__(name="markers", daemon=True)
        self.service = service
        self.app_id = app_id
        self.team_id = team_id
        self.start_after = start_after
        self.stop_at = stop_at
        self.next_marker = first
        self.latencies: list[float] = []
        self.problems: list[str] = []

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {READ_TOKEN}"}
        with httpx.Client(base_url=self.service.url, timeout=30, headers=headers) as http:
            time.sleep(max(0.0, self.start_after - time.monotonic()))
            # At least one marker even when this thread wakes late (a busy shared machine):
            # a run without a single receipt-to-visible figure is a bench failure.
            while True:
                began = time.monotonic()
                self._one(http)
                if time.monotonic() >= self.stop_at:
                    return
                time.sleep(max(0.0, MARKER_EVERY_SECONDS - (time.monotonic() - began)))

    def _one(self, http: httpx.Client) -> None:
        admin_id, body = marker_body(self.next_marker, app_id=self.app_id, team_id=self.team_id)
        self.next_marker += 1
        sent = time.perf_counter()
        answer = http.post(
            "/webhooks/intercom",
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-Hub-Signature": sign_body(body, SIM_SECRET),
            },
        )
        if answer.status_code != 200 or answer.json().get("status") != "accepted":
            self.problems.append(f"marker {admin_id}: {answer.status_code} {answer.text[:200]}")
            return
        deadline = sent + 30
        while time.perf_counter() < deadline:
            if http.get(f"/api/v1/users/{admin_id}").status_code == 200:
                self.latencies.append(time.perf_counter() - sent)
                return
            time.sleep(0.01)
        self.problems.append(f"marker {admin_id} was not visible after 30 s")


def _wait_drained(service: ServerProcess, timeout: float = 300) -> float:
    started = time.monotonic()
    wait_for(
        lambda: readiness(service).get("inbox_backlog") == 0,
        timeout=timeout,
        interval=0.1,
        what="the webhook inbox to drain",
    )
    return time.monotonic() - started


def _prepared_service(ctx: Context, sim: SimulatorServer, url: str) -> ServerProcess | None:
    service = start_service(url, sim, ctx.workdir, ctx.cores)
    baseline = run_baseline(service)
    if baseline["status"] != "succeeded":
        service.stop()
        ctx.report.fail(f"webhooks: the baseline did not succeed: {baseline}")
        return None
    return service


def _intake(ctx: Context, sim: SimulatorServer, deliveries: _Deliveries) -> None:
    team_id = next(iter(sim.workspace.teams))
    with ctx.backend.fresh_database(ctx.workdir) as url:
        service = _prepared_service(ctx, sim, url)
        if service is None:
            return
        reference = start_reference(ctx.workdir, ctx.cores, secret=SIM_SECRET)
        mine: list[dict[str, Any]] = []
        theirs: list[dict[str, Any]] = []
        marker_latencies: list[float] = []
        drains: list[float] = []
        try:
            for attempt in range(ctx.repeat):
                spec = load_spec(
                    ctx, service, deliveries.request(f"intake{attempt}"), connections=CONNECTIONS
                )
                # The markers' clock starts after the generator is spawned (and, for a spec larger
                # than a pipe buffer, has read it), so a slow spawn cannot eat their window.
                load = LoadRun(spec).start()
                now = time.monotonic()
                markers = _Markers(
                    service,
                    deliveries.app_id,
                    team_id,
                    now + spec["warmup"],
                    now + spec["warmup"] + spec["duration"],
                    first=attempt * 100_000,
                )
                markers.start()
                result = load.wait()
                markers.join(60)
                check_load(ctx, "webhook intake (service)", result, 200)
                for problem in markers.problems:
                    ctx.report.fail(f"webhooks: {problem}")
                if not markers.latencies:
                    ctx.report.fail("webhooks: no marker teammate was measured during the load")
                marker_latencies += markers.latencies
                drains.append(_wait_drained(service))
                mine.append(result)
                ref = run_load(
                    load_spec(
                        ctx, reference, deliveries.request(f"ref{attempt}"), connections=CONNECTIONS
                    )
                )
                check_load(ctx, "webhook intake (reference)", ref, 200)
                theirs.append(ref)
                log(
                    f"  intake {attempt + 1}/{ctx.repeat}: {result['rps']:.0f}/s "
                    f"(p99 {result['latency_ms']['p99']:.1f} ms), reference {ref['rps']:.0f}/s, "
                    f"markers p95 {percentile(sorted(markers.latencies), 0.95) * 1000:.0f} ms, "
                    f"drained {drains[-1]:.1f}s after"
                )
        finally:
            reference.stop()
            service.stop()
    if not mine or not theirs:
        return
    ratios = [m["rps"] / t["rps"] for m, t in zip(mine, theirs, strict=True) if t["rps"]]
    ratio = median(ratios)
    rates = [m["rps"] for m in mine]
    ctx.target(
        AREA,
        f"intake: signed deliveries/s at {CONNECTIONS} connections",
        median(rates),
        "req/s",
        target=">= 1,000/s and >= 50% of reference",
        ok=lambda v: v >= 1000 and ratio >= 0.5,
        samples=rates,
        reference=median([t["rps"] for t in theirs]),
        ratio=ratio,
        note="reference = HMAC check + 200 only",
    )
    p99s = [m["latency_ms"]["p99"] for m in mine]
    ctx.target(
        AREA,
        "intake: p99 latency",
        median(p99s),
        "ms",
        target="< 100 ms",
        ok=lambda v: v < 100,
        samples=p99s,
        reference=median([t["latency_ms"]["p99"] for t in theirs]),
    )
    visible = sorted(marker_latencies)
    ctx.target(
        AREA,
        "receipt -> visible in /users/{id}, p95 under load",
        percentile(visible, 0.95) * 1000,
        "ms",
        target="< 1,000 ms",
        ok=lambda v: v < 1000,
        note=f"{len(visible)} markers, median {percentile(visible, 0.5) * 1000:.0f} ms, "
        f"max {visible[-1] * 1000 if visible else float('nan'):.0f} ms",
    )
    ctx.figure(
        AREA,
        "inbox drained after the load stopped",
        median(drains),
        "s",
        samples=drains,
        note="applier catching up with what intake stored",
    )


def _apply_throughput(ctx: Context, sim: SimulatorServer, deliveries: _Deliveries) -> None:
    n_events = ctx.plan.apply_events
    fetched = asyncio.run(fetch(sim))
    rates: list[float] = []
    with ctx.backend.fresh_database(ctx.workdir) as url:
        upgrade_to_head(url)
        db = create_database(url)
        try:
            with db.writing() as session:
                apply_baseline(session, fetched)
            for attempt in range(ctx.repeat):
                request = deliveries.request(f"apply{attempt}")
                bodies = (
                    delivery_body(
                        request["start"] + i,
                        deliveries.admins,
                        app_id=deliveries.app_id,
                        tag=request["tag"],
                        base_created_at=deliveries.base_created_at,
                    )
                    for i in range(n_events)
                )
                events = pending_events(bodies)
                with db.writing() as session:
                    inbox.store_events(session, events)
                applied = 0
                started = time.perf_counter()
                while True:
                    result = apply_pending_batch(db, expected_app_id=None)
                    if not result.claimed:
                        break
                    applied += result.claimed
                elapsed = time.perf_counter() - started
                if applied != n_events:
                    ctx.report.fail(f"apply: {applied} of {n_events} stored events were claimed")
                with db.reading() as session:
                    left = inbox.backlog(session).pending
                    failed = inbox.list_events(session, status=inbox.InboxStatus.FAILED, limit=5)
                if failed or left:
                    ctx.report.fail(
                        f"apply: {left} events left pending, failures: {[e.error for e in failed]}"
                    )
                rates.append(applied / elapsed)
                log(f"  apply {attempt + 1}/{ctx.repeat}: {applied} events in {elapsed:.2f}s")
        finally:
            db.dispose()
    ctx.target(
        AREA,
        f"apply: events/s draining {n_events:,} pending",
        median(rates),
        "events/s",
        target=">= 2,000/s",
        ok=lambda v: v >= 2000,
        samples=rates,
        note="apply_pending_batch loop, in process",
    )


def _memory(ctx: Context, sim: SimulatorServer, deliveries: _Deliveries) -> None:
    first, total = ctx.plan.memory_deliveries
    with ctx.backend.fresh_database(ctx.workdir) as url:
        service = _prepared_service(ctx, sim, url)
        if service is None:
            return
        try:
            request = deliveries.request("memory")
            spec = load_spec(ctx, service, request, connections=CONNECTIONS, total=first)
            check_load(ctx, "memory run, first part", run_load(spec), 200)
            _wait_drained(service)
            after_first = service.memory_kb()
            rest = {**request, "start": request["start"] + first}
            spec = load_spec(ctx, service, rest, connections=CONNECTIONS, total=total - first)
            result = run_load(spec)
            check_load(ctx, "memory run, second part", result, 200)
            _wait_drained(service)
            after_all = service.memory_kb()
        finally:
            service.stop()
    growth = after_all["VmRSS"] / after_first["VmRSS"]
    ctx.target(
        AREA,
        f"RSS after {total:,} / after {first:,} deliveries",
        growth,
        "x",
        target="<= 1.2",
        ok=lambda v: v <= 1.2,
        note=f"{after_first['VmRSS'] / 1024:.0f} MB -> {after_all['VmRSS'] / 1024:.0f} MB"
        f" (peak {after_all['VmHWM'] / 1024:.0f} MB)",
    )


def run(ctx: Context) -> None:
    size = ctx.plan.workspace
    workspace = workspace_for(size)
    deliveries = _Deliveries(workspace)
    with SimulatorServer(workspace, access_token=SIM_TOKEN, client_secret=SIM_SECRET) as sim:
        log(f"webhooks: intake at {CONNECTIONS} connections, {size} teammates")
        _intake(ctx, sim, deliveries)
        log("webhooks: apply throughput")
        _apply_throughput(ctx, sim, deliveries)
        log("webhooks: memory across deliveries")
        _memory(ctx, sim, deliveries)
