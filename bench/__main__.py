"""`python -m bench [--quick] [--only AREA] [--postgres URL | --postgres-from-env]`.

Prints a table (figure, target, pass/fail, ratio against the same-run reference route) and
writes the same as JSON to bench/results/latest.json. Exits non-zero when something
functionally broke (an error answer, a version bump on a no-change re-sync, a marker teammate
that never showed up, ...); missed timing targets only fail the exit code with --strict,
because shared machines are noisy.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench import provisioning, snapshot, sync, webhooks
from bench.common import (
    PLANS,
    Backend,
    Context,
    Cores,
    Report,
    log,
    machine_info,
    python_speed,
)
from harness.databases import database_server
from harness.service import ROOT

AREAS: dict[str, Callable[[Context], None]] = {
    "sync": sync.run,
    "snapshot": snapshot.run,
    "webhooks": webhooks.run,
    "provisioning": provisioning.run,
}


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of sizes: {text}") from None
    if not sizes or min(sizes) < 40:
        raise argparse.ArgumentTypeError("each size must be at least 40 teammates")
    return sizes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes and short windows (CI smoke; targets not judged)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes: the test suite's pass over the code"
    )
    parser.add_argument(
        "--only", action="append", choices=sorted(AREAS), help="run only this area (repeatable)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="repetitions per measurement; the median is reported (default 3, quick 1)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds per throughput window (default 8, quick 1.5)",
    )
    parser.add_argument(
        "--provisioning-teammates",
        metavar="N[,N...]",
        type=_sizes,
        default=None,
        help="workspace sizes of the provisioning area (default 1000,10000; quick 200; smoke 40)",
    )
    parser.add_argument(
        "--provisioning-repeat",
        type=int,
        default=None,
        help="removals and team changes per provisioning size (default 20, quick 3)",
    )
    parser.add_argument(
        "--postgres",
        metavar="URL",
        default=None,
        help="also run against this PostgreSQL server (a database is created "
        "and dropped per scenario)",
    )
    parser.add_argument(
        "--postgres-from-env",
        action="store_true",
        help="take the PostgreSQL URL from TEST_DATABASE_URL (scripts/test-postgres.sh sets it)",
    )
    parser.add_argument(
        "--no-sqlite", action="store_true", help="skip the SQLite pass (with --postgres)"
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when a target is missed, not only on functional failures",
    )
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    parser.add_argument(
        "--keep-workdir",
        action="store_true",
        help="keep the scratch folder (databases, server logs)",
    )
    return parser.parse_args(argv)


def backends(args: argparse.Namespace) -> list[Backend]:
    chosen: list[Backend] = []
    if not args.no_sqlite:
        chosen.append(Backend("sqlite"))
    url = args.postgres
    if args.postgres_from_env:
        url = url or database_server()
        if url is None:
            raise SystemExit("--postgres-from-env: TEST_DATABASE_URL is not set")
    if url:
        chosen.append(Backend("postgresql", url))
    if not chosen:
        raise SystemExit("nothing to run: --no-sqlite without --postgres")
    return chosen


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = PLANS["smoke" if args.smoke else "quick" if args.quick else "full"]
    if args.repeat:
        plan = dataclasses.replace(plan, repeat=args.repeat)
    if args.duration:
        plan = dataclasses.replace(plan, window=args.duration)
    if args.provisioning_teammates:
        plan = dataclasses.replace(plan, provisioning_sizes=args.provisioning_teammates)
    if args.provisioning_repeat:
        plan = dataclasses.replace(plan, provisioning_repeat=args.provisioning_repeat)
    repeat, duration = plan.repeat, plan.window
    areas = args.only or list(AREAS)
    report = Report(
        mode=plan.name,
        started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        machine=machine_info(),
    )
    report.machine["python_speed_start_s"] = python_speed()
    cores = Cores.detect()
    report.machine["cores"] = {"server": cores.server, "load_generator": cores.client}
    workdir = Path(tempfile.mkdtemp(prefix="intercom-sync-bench-"))
    log(
        f"mode {report.mode}, areas {areas}, repeat {repeat}, window {duration:g}s, "
        f"server core {cores.server}, load-generator core {cores.client}, scratch {workdir}"
    )
    started = time.monotonic()
    try:
        for backend in backends(args):
            ctx = Context(report, backend, cores, workdir, plan)
            for area in areas:
                log(f"== {backend.name}: {area}")
                try:
                    AREAS[area](ctx)
                except Exception as exc:
                    traceback.print_exc()
                    report.fail(f"{backend.name}/{area}: {type(exc).__name__}: {exc}")
    finally:
        if args.keep_workdir:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report.machine["elapsed_s"] = round(time.monotonic() - started, 1)
    report.machine["load_average_end"] = machine_info().get("load_average")
    report.machine["python_speed_end_s"] = python_speed()
    report.write_json(args.output)
    print()
    print(report.table())
    print()
    missed = report.missed()
    print(
        f"{len(report.figures)} figures, {len(missed)} missed targets, "
        f"{len(report.failures)} functional failures, {report.machine['elapsed_s']}s; "
        f"JSON in {args.output}"
    )
    if not plan.judged:
        print(f"{plan.name} mode: small sizes, targets are not judged (they apply at full size)")
    for failure in report.failures:
        print(f"FUNCTIONAL FAILURE: {failure}")
    if report.failures:
        return 1
    if args.strict and missed:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
