"""Soak: mixed load against a real `intercom-sync serve` process and the bundled simulator for a
set time, watching for errors and for leaks.

    .venv/bin/python -m bench.soak [--duration SECONDS] [--database-url URL] [--json PATH]

Load, all at once: signed webhooks that track changes made to the simulator's workspace (away
mode, sign-ins, teammates joining and leaving), C1-style snapshot polls with `If-None-Match`,
change-feed reads, readiness checks, and an operator resync every few seconds. At the end the
inbox must drain and a last resync must leave the snapshot equal to the workspace.

Reported: errors, p50/p99/max latency per kind, and the service's RSS and open file descriptors
(/proc/PID/fd) after warm-up and at the end. The exit status is non-zero when anything failed,
the store did not converge, or descriptors or memory grew beyond a generous bound.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from app.intercom.signature import sign_body
from app.simulator import (
    SimAdmin,
    SimulatorServer,
    admin_webhook_item,
    build_notification,
    generate_workspace,
)
from harness.service import (
    OPERATOR_TOKEN,
    READ_TOKEN,
    SIM_SECRET,
    SIM_TOKEN,
    ServiceProcess,
    base_env,
)

# Growth allowed between the sample after warm-up and the end. Generous: this is meant to catch
# a leak (a descriptor per request, a cache without bound), not allocator noise.
FD_GROWTH_LIMIT = 25
# uvicorn closes connections idle for 5 s: a client reusing one at that moment gets "Server
# disconnected". Clients drop idle connections sooner so as not to race that close.
KEEPALIVE = httpx.Limits(keepalive_expiry=2.0)
RSS_GROWTH_LIMIT_KB = 96 * 1024
RSS_GROWTH_FACTOR = 1.5


def say(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ----- the service process -----------------------------------------------------------------------


def start_service(database_url: str, sim: SimulatorServer, log_path: Path) -> ServiceProcess:
    """`intercom-sync serve` as a child process, with its log in a file; not waited for."""
    env = base_env(
        database_url,
        sim,
        RECONCILE_INTERVAL_SECONDS="30",
        RECONCILE_ALLOW_SHORT_INTERVAL="true",
        SYNC_ON_STARTUP="true",
        INTERCOM_BACKOFF_INITIAL_SECONDS="0.05",
        WEBHOOK_REFRESH_DEBOUNCE_SECONDS="1",
    )
    return ServiceProcess(env, log_path=log_path).start(wait=False)


def stop_service(service: ServiceProcess) -> int | None:
    """SIGTERM (SIGKILL after 60 s); the exit code."""
    process = service.process
    service.stop(timeout=60)
    return None if process is None else process.returncode


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# ----- recording ---------------------------------------------------------------------------------


@dataclass
class Recorder:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def call(
        self, kind: str, expected: tuple[int, ...], send: Callable[[], httpx.Response]
    ) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            response = send()
        except httpx.HTTPError as exc:
            self.error(kind, f"{type(exc).__name__}: {exc}")
            return None
        elapsed = time.perf_counter() - started
        with self.lock:
            self.latencies[kind].append(elapsed)
        if response.status_code not in expected:
            self.error(kind, f"HTTP {response.status_code}: {response.text[:200]}")
            return None
        return response

    def error(self, kind: str, message: str) -> None:
        with self.lock:
            self.errors[kind].append(message)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


# ----- load --------------------------------------------------------------------------------------


class Changes:
    """Changes to the simulator's workspace, each with the notification Intercom would send.
    The population stays bounded: teammates leave as others join."""

    def __init__(self, sim: SimulatorServer, seed: int) -> None:
        self.sim = sim
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.next_id = 770_000_000
        self.clock = int(time.time()) - 1_000_000
        self.serial = 0
        with sim.workspace.lock:
            self.team_ids = sorted(sim.workspace.teams)
            self.app_id = sim.workspace.id_code
            self.joined: list[str] = []

    def next(self) -> bytes:
        with self.lock:
            self.clock += 1
            self.serial += 1
            roll = self.rng.random()
            ws = self.sim.workspace
            if roll < 0.1 or not self.joined:
                admin_id = str(self.next_id)
                self.next_id += 1
                teams = self.rng.sample(self.team_ids, self.rng.randint(1, 3))
                admin = ws.upsert_admin(
                    SimAdmin(id=admin_id, name=f"Soak {admin_id}",
                             email=f"soak{admin_id}@acme.example", team_ids=teams)
                )  # fmt: skip
                self.joined.append(admin_id)
                topic, item = "admin.added_to_workspace", admin_webhook_item(admin)
            elif roll < 0.2 and len(self.joined) > 20:
                admin_id = self.joined.pop(self.rng.randrange(len(self.joined)))
                gone = ws.get_admin(admin_id)
                assert gone is not None
                ws.remove_admin(admin_id)
                item = admin_webhook_item(gone)
                item["team_ids"] = []
                topic = "admin.removed_from_workspace"
            elif roll < 0.6:
                with ws.lock:
                    admin = self.rng.choice(list(ws.admins.values()))
                    admin.away_mode_enabled = not admin.away_mode_enabled
                    snapshot = admin.copy()
                topic, item = "admin.away_mode_updated", admin_webhook_item(snapshot)
            else:
                with ws.lock:
                    admin = self.rng.choice(list(ws.admins.values())).copy()
                topic, item = "admin.logged_in", admin_webhook_item(admin)
            envelope = build_notification(
                topic,
                item,
                app_id=self.app_id,
                created_at=self.clock,
                notification_id=f"soak_{self.serial}_{self.rng.getrandbits(32):08x}",
            )
            return orjson.dumps(envelope)


def paced(stop: threading.Event, per_second: float, work: Callable[[], None]) -> None:
    """Call `work` about `per_second` times a second until `stop` is set."""
    interval = 1.0 / per_second
    next_at = time.monotonic()
    while not stop.is_set():
        work()
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            stop.wait(delay)
        else:
            next_at = time.monotonic()  # fell behind: do not burst to catch up


def webhooks(url: str, changes: Changes, rec: Recorder, stop: threading.Event, rate: float) -> None:
    with httpx.Client(base_url=url, timeout=30, limits=KEEPALIVE) as client:

        def send() -> None:
            body = changes.next()
            headers = {"Content-Type": "application/json", "X-Hub-Signature": sign_body(
                body, SIM_SECRET)}  # fmt: skip
            rec.call("webhook", (200,), lambda: client.post(
                "/webhooks/intercom", content=body, headers=headers))  # fmt: skip

        paced(stop, rate, send)


def poller(url: str, rec: Recorder, stop: threading.Event, rate: float) -> None:
    auth = {"Authorization": f"Bearer {READ_TOKEN}"}
    with httpx.Client(base_url=url, timeout=30, headers=auth, limits=KEEPALIVE) as client:
        state: dict[str, Any] = {"etag": None, "version": 0}

        def poll() -> None:
            headers = {"If-None-Match": state["etag"]} if state["etag"] else {}
            response = rec.call("snapshot", (200, 304), lambda: client.get(
                "/api/v1/snapshot", headers=headers))  # fmt: skip
            if response is not None and response.status_code == 200:
                state["etag"] = response.headers["etag"]
            changes = rec.call("changes", (200,), lambda: client.get(
                "/api/v1/changes", params={"since": state["version"], "limit": 1000}))  # fmt: skip
            if changes is not None:
                state["version"] = changes.json()["next_since"]

        paced(stop, rate, poll)


def operator_load(url: str, rec: Recorder, stop: threading.Event, every: float) -> None:
    auth = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    with httpx.Client(base_url=url, timeout=30, headers=auth, limits=KEEPALIVE) as client:

        def resync() -> None:
            rec.call("resync", (202,), lambda: client.post("/resync"))
            rec.call("readyz", (200,), lambda: client.get("/readyz"))

        paced(stop, 1 / every, resync)


# ----- checks at the end -------------------------------------------------------------------------


def wait_drained(url: str, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = httpx.get(f"{url}/readyz", timeout=10)
        if response.status_code == 200 and response.json()["inbox_backlog"] == 0:
            return True
        time.sleep(0.2)
    return False


def final_resync(url: str, timeout: float = 300) -> dict[str, Any]:
    """A baseline that starts after every webhook was applied, run to its end."""
    auth = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=30, headers=auth) as client:
        while time.monotonic() < deadline:
            run = client.post("/resync").json()
            fresh = run["status"] == "queued"
            while run["status"] in ("queued", "running") and time.monotonic() < deadline:
                time.sleep(0.1)
                run = client.get(f"/sync-runs/{run['id']}").json()
            if fresh:
                return dict(run)
    raise RuntimeError("the final resync did not finish")


def served_matches_workspace(url: str, sim: SimulatorServer) -> list[str]:
    auth = {"Authorization": f"Bearer {READ_TOKEN}"}
    body = httpx.get(f"{url}/api/v1/snapshot", headers=auth, timeout=60).json()
    served_users = {u["id"]: set(u["team_ids"]) for u in body["users"]}
    served_teams = {t["id"]: set(t["member_ids"]) for t in body["teams"]}
    with sim.workspace.lock:
        users = {a.id: set(a.team_ids) for a in sim.workspace.admins.values()}
        teams = {t.id: set(t.admin_ids) for t in sim.workspace.teams.values()}
    problems = []
    if served_users != users:
        problems.append(f"users differ: {len(set(served_users) ^ set(users))} ids, memberships")
    if served_teams != teams:
        problems.append("team memberships differ from the workspace")
    return problems


def run_history(url: str) -> list[dict[str, Any]]:
    auth = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    response = httpx.get(f"{url}/sync-runs", params={"limit": 1000}, headers=auth, timeout=30)
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def log_errors(path: Path) -> list[str]:
    found = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            if "Traceback" in line or "database is locked" in line:
                found.append(line)
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "critical"):
            found.append(str(entry.get("message"))[:300])
    return found


# ----- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description="Mixed load for a while, watching for leaks."
    )
    parser.add_argument("--duration", type=float, default=600, help="seconds of load (600)")
    parser.add_argument(
        "--database-url", default=None, help="store to use (default: a fresh SQLite file)"
    )
    parser.add_argument("--teammates", type=int, default=300, help="workspace size (300)")
    parser.add_argument("--webhook-rate", type=float, default=40, help="deliveries/s (40)")
    parser.add_argument("--poll-rate", type=float, default=4, help="snapshot+changes polls/s (4)")
    parser.add_argument("--resync-every", type=float, default=5, help="seconds between resyncs")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    parser.add_argument(
        "--keep", action="store_true", help="keep the work folder (log, store) after a clean run"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="intercom-sync-soak-"))
    database_url = args.database_url or f"sqlite:///{workdir / 'soak.db'}"
    log_path = workdir / "service.log"
    workspace = generate_workspace(args.teammates, max(4, args.teammates // 25), seed=2026)
    sim = SimulatorServer(workspace, access_token=SIM_TOKEN, client_secret=SIM_SECRET).start()
    service = start_service(database_url, sim, log_path)
    rec = Recorder()
    failures: list[str] = []
    report: dict[str, Any] = {"duration_s": args.duration, "log": str(log_path)}
    try:
        service.wait_ready(timeout=120)
        say(
            f"service pid {service.pid} ready at {service.url}; store {database_url.split('@')[-1]}"
        )
        stop = threading.Event()
        changes = Changes(sim, seed=7)
        threads = [
            threading.Thread(
                target=webhooks, args=(service.url, changes, rec, stop, args.webhook_rate / 2)
            ),
            threading.Thread(
                target=webhooks, args=(service.url, changes, rec, stop, args.webhook_rate / 2)
            ),
            threading.Thread(target=poller, args=(service.url, rec, stop, args.poll_rate / 2)),
            threading.Thread(target=poller, args=(service.url, rec, stop, args.poll_rate / 2)),
            threading.Thread(
                target=operator_load, args=(service.url, rec, stop, args.resync_every)
            ),
        ]
        started = time.monotonic()
        for thread in threads:
            thread.daemon = True
            thread.start()
        # Caches, pools and the allocator settle first; growth is measured from there.
        warmup = min(30.0, args.duration * 0.1)
        time.sleep(warmup)
        start = {"rss_kb": rss_kb(service.pid), "fds": open_fds(service.pid)}
        peak = dict(start)
        say(
            f"after {warmup:.0f}s warm-up: RSS {start['rss_kb'] / 1024:.1f} MiB, {start['fds']} fds"
        )
        while time.monotonic() - started < args.duration:
            time.sleep(min(5.0, max(0.0, args.duration - (time.monotonic() - started))))
            peak["rss_kb"] = max(peak["rss_kb"], rss_kb(service.pid))
            peak["fds"] = max(peak["fds"], open_fds(service.pid))
        stop.set()
        for thread in threads:
            thread.join(60)
        end = {"rss_kb": rss_kb(service.pid), "fds": open_fds(service.pid)}

        if not wait_drained(service.url):
            failures.append("the inbox did not drain within 120 s")
        run = final_resync(service.url)
        if run["status"] != "succeeded":
            failures.append(f"the final resync ended {run['status']}: {run.get('error')}")
        failures += served_matches_workspace(service.url, sim)
        runs = run_history(service.url)
        bad_runs = [r for r in runs if r["status"] in ("failed", "blocked")]
        failures += [f"sync run {r['id']} {r['status']}: {r.get('error')}" for r in bad_runs]
        failures += [f"service logged: {line}" for line in log_errors(log_path)]
        for kind, messages in rec.errors.items():
            failures.append(f"{len(messages)} {kind} errors, e.g. {messages[0]}")
        if end["fds"] - start["fds"] > FD_GROWTH_LIMIT:
            failures.append(f"open descriptors grew from {start['fds']} to {end['fds']}")
        rss_bound = start["rss_kb"] * RSS_GROWTH_FACTOR + RSS_GROWTH_LIMIT_KB
        if end["rss_kb"] > rss_bound:
            failures.append(f"RSS grew from {start['rss_kb']} KiB to {end['rss_kb']} KiB")
        report.update(
            requests={
                kind: {
                    "count": len(values),
                    "errors": len(rec.errors.get(kind, [])),
                    "p50_ms": round(percentile(values, 0.50) * 1000, 2),
                    "p99_ms": round(percentile(values, 0.99) * 1000, 2),
                    "max_ms": round(max(values, default=0.0) * 1000, 2),
                }
                for kind, values in sorted(rec.latencies.items())
            },
            rss_kb={"start": start["rss_kb"], "end": end["rss_kb"], "peak": peak["rss_kb"]},
            fds={"start": start["fds"], "end": end["fds"], "peak": peak["fds"]},
            sync_runs={
                status: sum(1 for r in runs if r["status"] == status)
                for status in sorted({r["status"] for r in runs})
            },
            store_version=run.get("stats") and httpx.get(f"{service.url}/readyz").json()["version"],
            failures=failures,
        )
    except Exception as exc:  # report what happened rather than a bare traceback
        failures.append(f"the soak itself failed: {type(exc).__name__}: {exc}")
        report["failures"] = failures
    finally:
        code = stop_service(service)
        sim.stop()
    # uvicorn re-raises the SIGTERM it handled once it has shut down cleanly.
    clean = "intercom-sync stopped" in log_path.read_text(errors="replace")
    if code not in (0, -signal.SIGTERM) or not clean:
        failures.append(f"the service did not shut down cleanly on SIGTERM (exit {code})")
        report["failures"] = failures
    if not failures and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
        report["log"] = None
    print_report(report)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if failures else 0


def print_report(report: dict[str, Any]) -> None:
    kept = f"; service log {report['log']}" if report["log"] else ""
    print(f"soak: {report['duration_s']:.0f} s of mixed load{kept}")
    requests = report.get("requests", {})
    if requests:
        print(
            f"  {'kind':<10} {'count':>7} {'errors':>7} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}"
        )
        for kind, row in requests.items():
            print(
                f"  {kind:<10} {row['count']:>7} {row['errors']:>7} {row['p50_ms']:>9.1f} "
                f"{row['p99_ms']:>9.1f} {row['max_ms']:>9.1f}"
            )
    if "rss_kb" in report:
        rss, fds = report["rss_kb"], report["fds"]
        print(
            f"  RSS MiB: {rss['start'] / 1024:.1f} after warm-up, {rss['end'] / 1024:.1f} at the "
            f"end (peak {rss['peak'] / 1024:.1f}); open fds: {fds['start']} -> {fds['end']} "
            f"(peak {fds['peak']})"
        )
        print(f"  sync runs: {report['sync_runs']}; store version {report['store_version']}")
    failures = report.get("failures", [])
    print("  result: " + ("FAILED" if failures else "ok"))
    for failure in failures:
        print(f"    - {failure}")


if __name__ == "__main__":
    raise SystemExit(main())
