"""Shared machinery: figures and the report, CPU placement, the service and reference server
processes, fresh databases, and small helpers."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from app.simulator import SimulatorServer
from harness.databases import fresh_database
from harness.service import (
    OPERATOR_TOKEN,
    READ_TOKEN,
    ROOT,
    ServerProcess,
    ServiceProcess,
    base_env,
)
from harness.waiting import free_port, wait_for


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ----- figures --------------------------------------------------------------------------------


@dataclass
class Figure:
    """One measured figure. `passed` is None when the figure has no target (informational)."""

    area: str
    name: str
    value: float | None
    unit: str
    target: str = ""
    passed: bool | None = None
    database: str = "sqlite"
    reference: float | None = None  # the same-run reference figure, for throughput
    ratio: float | None = None  # value / reference
    samples: list[float] = field(default_factory=list)
    note: str = ""


@dataclass
class Report:
    mode: str
    started_at: str
    machine: dict[str, Any]
    figures: list[Figure] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # functional breakage: exit non-zero

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        shown = _fmt(figure.value)
        log(f"{figure.database}/{figure.area}: {figure.name} = {shown} {figure.unit}")
        return figure

    def fail(self, message: str) -> None:
        log(f"FUNCTIONAL FAILURE: {message}")
        self.failures.append(message)

    def missed(self) -> list[Figure]:
        return [f for f in self.figures if f.passed is False]

    def table(self) -> str:
        header = ("db", "area", "figure", "value", "target", "ratio vs ref", "result")
        rows = [header]
        for f in self.figures:
            value = f"{_fmt(f.value)} {f.unit}".strip()
            ratio = ""
            if f.ratio is not None:
                ratio = f"{f.ratio:.2f} (ref {_fmt(f.reference)})"
            result = {True: "pass", False: "FAIL", None: "-"}[f.passed]
            rows.append((f.database, f.area, f.name, value, f.target, ratio, result))
        widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
        lines = []
        for index, row in enumerate(rows):
            lines.append("  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row)))
            if index == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "mode": self.mode,
            "started_at": self.started_at,
            "machine": self.machine,
            "figures": [asdict(f) for f in self.figures],
            "missed_targets": [f"{f.database}/{f.area}: {f.name}" for f in self.missed()],
            "functional_failures": self.failures,
        }
        path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value != value:  # NaN
        return "nan"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def python_speed() -> float:
    """Seconds of CPU for a fixed pure-Python loop: how fast this machine runs Python right
    now (about 0.17 s on the machine of docs/performance.md), to read other figures against."""
    started = time.process_time()
    sum(range(10_000_000))
    return round(time.process_time() - started, 3)


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "platform": sys.platform,
    }
    with contextlib.suppress(OSError):
        info["load_average"] = os.getloadavg()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    return info


# ----- CPU placement ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Cores:
    """Where each process runs: the server on one core, the load generator on another."""

    server: int | None
    client: int | None

    @classmethod
    def detect(cls) -> Cores:
        if not hasattr(os, "sched_getaffinity"):
            return cls(None, None)
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return cls(None, None)
        return cls(server=cpus[-1], client=cpus[0])


def service_env(database_url: str, sim: SimulatorServer, **overrides: object) -> dict[str, str]:
    """The service's settings: production defaults except where a benchmark needs control
    (no schedule, no start-up sync: each benchmark triggers and times its own baseline)."""
    return base_env(database_url, sim, **{"SYNC_ON_STARTUP": "false", **overrides})


def start_service(
    database_url: str, sim: SimulatorServer, workdir: Path, cores: Cores, **overrides: object
) -> ServerProcess:
    """`intercom-sync serve` as its own process, pinned to the server core."""
    port = free_port()
    # The working folder holds no .env, so a developer's settings cannot leak into a run.
    return ServiceProcess(
        service_env(database_url, sim, **overrides),
        port=port,
        log_path=workdir / f"service-{port}.log",
        cpu=cores.server,
        cwd=workdir,
    ).start(timeout=60)


def start_reference(
    workdir: Path, cores: Cores, *, body: bytes = b"{}", etag: str = '"v0"', secret: str = ""
) -> ServerProcess:
    port = free_port()
    body_file = workdir / f"reference-{port}.body"
    body_file.write_bytes(body)
    argv = [
        sys.executable,
        "-m",
        "bench.reference",
        "--port",
        str(port),
        "--body-file",
        str(body_file),
        "--etag",
        etag,
        "--secret",
        secret,
    ]
    if cores.server is not None:
        argv += ["--cpu", str(cores.server)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return ServerProcess(
        argv,
        port=port,
        env=env,
        log_path=workdir / f"reference-{port}.log",
        cpu=cores.server,
        cwd=ROOT,
    ).start(timeout=60)


def client(server: ServerProcess, token: str | None = READ_TOKEN) -> httpx.Client:
    return server.client(token, timeout=120)


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def run_baseline(server: ServerProcess, *, timeout: float = 600) -> dict[str, Any]:
    """`POST /resync`, then wait for the run to finish; returns the run object plus the
    client-side wall time (`wall_s`)."""
    with client(server, OPERATOR_TOKEN) as http:
        started = time.perf_counter()
        response = http.post("/resync")
        response.raise_for_status()
        run_id = response.json()["id"]

        def finished() -> dict[str, Any] | None:
            run: dict[str, Any] = http.get(f"/sync-runs/{run_id}").json()
            return run if run["finished_at"] else None

        run = wait_for(finished, timeout=timeout, interval=0.02, what=f"sync run {run_id}")
        run["wall_s"] = time.perf_counter() - started
        # The run's own clock: from the moment it started to the commit of its result.
        run["server_s"] = (
            parse_time(run["finished_at"]) - parse_time(run["started_at"])
        ).total_seconds()
        return run


def readiness(server: ServerProcess) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{server.url}/readyz", timeout=30).json()
    return body


# ----- databases ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """Where the stores live: `sqlite` files in a scratch folder, or a PostgreSQL server on
    which each scenario gets a database of its own."""

    name: str
    postgres_url: str | None = None

    @contextlib.contextmanager
    def fresh_database(self, workdir: Path) -> Iterator[str]:
        folder = Path(tempfile.mkdtemp(prefix="db-", dir=workdir))
        with fresh_database(self.postgres_url, folder, prefix="bench") as url:
            yield url


@dataclass(frozen=True)
class Plan:
    """Sizes and windows of one run. `full` is what the targets are stated for; `quick` is the
    CI smoke pass; `smoke` is the test suite's tiny pass over the same code."""

    name: str
    sync_sizes: tuple[int, int, int]  # the middle one carries the targets
    workspace: int  # teammates for the snapshot and webhook areas
    apply_events: int
    memory_deliveries: tuple[int, int]  # RSS read after the first, then after all
    window: float  # seconds of each measured throughput window
    warmup: float
    repeat: int
    rebuilds: int
    service_every_size: bool = True  # False: the service runs only at the middle sync size
    provisioning_sizes: tuple[int, ...] = (1_000,)  # teammates, one workspace each
    provisioning_repeat: int = 10  # removals, team adds and team removals per size

    @property
    def judged(self) -> bool:
        return self.name == "full"


PLANS = {
    "full": Plan(
        "full",
        (1_000, 10_000, 50_000),
        10_000,
        20_000,
        (10_000, 100_000),
        8.0,
        1.5,
        3,
        7,
        provisioning_sizes=(1_000, 10_000),
        provisioning_repeat=20,
    ),
    "quick": Plan(
        "quick",
        (200, 1_000, 2_000),
        1_000,
        2_000,
        (1_000, 5_000),
        1.5,
        0.5,
        1,
        3,
        provisioning_sizes=(200,),
        provisioning_repeat=3,
    ),
    "smoke": Plan(
        "smoke",
        (20, 40, 80),
        40,
        100,
        (100, 300),
        0.3,
        0.2,
        1,
        1,
        False,
        provisioning_sizes=(40,),
        provisioning_repeat=3,
    ),
}


@dataclass
class Context:
    """What every benchmark area gets."""

    report: Report
    backend: Backend
    cores: Cores
    workdir: Path
    plan: Plan

    @property
    def quick(self) -> bool:
        return not self.plan.judged

    @property
    def repeat(self) -> int:
        return self.plan.repeat

    @property
    def duration(self) -> float:
        return self.plan.window

    def figure(self, area: str, name: str, value: float | None, unit: str, **kw: Any) -> Figure:
        return self.report.add(
            Figure(area=area, name=name, value=value, unit=unit, database=self.backend.name, **kw)
        )

    def target(
        self,
        area: str,
        name: str,
        value: float | None,
        unit: str,
        *,
        target: str,
        ok: Callable[[float], bool],
        **kw: Any,
    ) -> Figure:
        passed = None if value is None or value != value else bool(ok(value))
        if not self.plan.judged:
            # Small sizes and short windows: the targets are stated for the full size, so
            # they are shown but not judged.
            passed = None
        return self.figure(area, name, value, unit, target=target, passed=passed, **kw)


# ----- load runs --------------------------------------------------------------------------------


def get_request(path: str, server: ServerProcess, headers: dict[str, str]) -> dict[str, str]:
    """A static GET as the load generator's request spec."""
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return {"kind": "static", "raw": "\r\n".join(lines) + "\r\n\r\n"}


def load_spec(
    ctx: Context,
    server: ServerProcess,
    request: dict[str, Any],
    *,
    connections: int,
    total: int | None = None,
) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": server.port,
        "connections": connections,
        "warmup": ctx.plan.warmup,
        "duration": ctx.duration,
        "total": total,
        "cpu": ctx.cores.client,
        "request": request,
        "timeout": 900,
    }


def check_load(ctx: Context, what: str, result: dict[str, Any], expected: int) -> bool:
    """Every answer had the expected status and no connection broke; else a functional failure."""
    unexpected = {s: n for s, n in result["statuses"].items() if int(s) != expected}
    if unexpected or result["error_count"] or not result["completed"]:
        ctx.report.fail(
            f"{what}: expected only {expected} answers, got {result['statuses']}, "
            f"{result['error_count']} errors {result['errors'][:3]}"
        )
        return False
    return True
