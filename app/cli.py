"""`intercom-sync serve | sync | migrate | check | demo`.

Ctrl-C: `serve` and `demo` stop cleanly and exit 0 (that is how they are stopped); any other
command cut short says so in one line and exits 130, as shells expect of an interrupt."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any, TextIO, cast

from app import __version__
from app.settings import ConfigError, Settings, load_settings

STATS_LINES = (
    ("teammates", "users_added", "users_updated", "users_removed"),
    ("teams", "teams_added", "teams_updated", "teams_removed"),
    ("memberships", "memberships_added", None, "memberships_removed"),
)
# A blocked run names who it would remove; past this many, the rest are counted.
WOULD_REMOVE_SHOWN = 20


def _settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        print(f"intercom-sync: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _prepare_store_or_exit(settings: Settings) -> None:
    """Migrate DATABASE_URL's store, or exit with one line naming the variable and cause."""
    from app.store.migrate import MigrationsNotFound, StoreUnavailable, prepare_store

    try:
        prepare_store(settings.database_url)
    except (StoreUnavailable, MigrationsNotFound) as exc:
        print(f"intercom-sync: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def describe_stats(stats: dict[str, int]) -> list[str]:
    """A run's stats as one readable line per kind of thing."""
    lines = []
    for kind, added, updated, removed in STATS_LINES:
        parts = [f"{stats.get(added, 0)} added"]
        if updated is not None:
            parts.append(f"{stats.get(updated, 0)} updated")
        parts.append(f"{stats.get(removed, 0)} removed")
        lines.append(f"  {kind + ':':<13}" + ", ".join(parts))
    return lines


def describe_would_remove(teammates: list[dict[str, Any]], run_id: int) -> list[str]:
    """A blocked run's `error.details.would_remove`, one teammate a line, a long list cut."""
    lines = [f"would remove {len(teammates)} teammates:"]
    for teammate in teammates[:WOULD_REMOVE_SHOWN]:
        name = teammate.get("name") or "(no name)"
        email = teammate.get("email") or "no email"
        lines.append(f"  - {teammate['id']} {name} <{email}>")
    if len(teammates) > WOULD_REMOVE_SHOWN:
        lines.append(
            f"  and {len(teammates) - WOULD_REMOVE_SHOWN} more (GET /sync-runs/{run_id} lists all)"
        )
    return lines


class _RetryLines(logging.Handler):
    """Prints the Intercom client's retry and rate-limit warnings as progress lines: a wait
    of 30-60 s is otherwise silence."""

    def emit(self, record: logging.LogRecord) -> None:
        from app.observability.logs import REDACTOR

        print(f"  {REDACTOR.scrub(record.getMessage())}", flush=True)


def _print_intercom_retries() -> None:
    client_log = logging.getLogger("app.intercom.client")
    client_log.setLevel(logging.WARNING)
    client_log.addHandler(_RetryLines())
    # The root handler is for the service's log; here these lines are the output.
    client_log.propagate = False


def cmd_migrate(_args: argparse.Namespace) -> int:
    from app.observability.logs import configure_logging

    settings = _settings_or_exit()
    configure_logging(settings.log_level, settings.log_format, settings.secret_values())
    _prepare_store_or_exit(settings)
    print("migrations applied: the store is at the latest schema")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from app.http_server import run_server
    from app.observability.logs import configure_logging

    settings = _settings_or_exit()
    configure_logging(settings.log_level, settings.log_format, settings.secret_values())
    _prepare_store_or_exit(settings)
    run_server(
        host=args.host,
        port=args.port,
        workers=args.workers,
        graceful_timeout=args.graceful_timeout,
    )
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from app.observability.logs import configure_logging
    from app.services import build_coordinator
    from app.settings import startup_warnings
    from app.store.engine import create_database
    from app.store.sync_runs import RunStatus, RunTrigger, RunView

    settings = _settings_or_exit()
    # Progress and the one-line reason are printed; log lines would only repeat them.
    configure_logging("critical", "console", settings.secret_values())
    _print_intercom_retries()
    if args.dry_run:
        return _dry_run(settings)
    print("migrating the store")
    _prepare_store_or_exit(settings)
    # After the store: an unusable DATABASE_URL stays a one-line answer.
    for warning in startup_warnings(settings):
        print(f"warning: {warning}", file=sys.stderr)
    db = create_database(settings.database_url)
    force: bool = args.force

    async def run() -> int:
        def started(_run: RunView) -> None:
            if force:
                print("force: the mass-removal brake is off for this run")

        coordinator = build_coordinator(db, settings)
        result, created = await coordinator.run_now(
            RunTrigger.CLI,
            force=force,
            started=started,
            progress=lambda line: print(line, flush=True),
        )
        if not created:
            print(
                f"sync failed: run {result.id} is already {result.status}; "
                "try again when it has finished",
                file=sys.stderr,
            )
            return 1
        if result.status == RunStatus.SUCCEEDED:
            for warning in result.warnings:  # items left as they were
                print(f"warning: {warning['resource_type']} {warning['id']}: {warning['reason']}")
            # The outcome stays the last line, for scripts that read it.
            print("\n".join([*describe_stats(result.stats), f"sync succeeded (run {result.id})"]))
            return 0
        reason = result.error_message or result.status
        would_remove = (result.error_details or {}).get("would_remove")
        if would_remove:
            print("\n".join(describe_would_remove(would_remove, result.id)), file=sys.stderr)
        print(f"sync {result.status}: {result.error_code}: {reason}", file=sys.stderr)
        return 1

    try:
        return asyncio.run(run())
    finally:
        db.dispose()


def _dry_run(settings: Settings) -> int:
    """Fetch, diff against the store and print the difference; write nothing (no migration,
    no run record: a dry run is not a run, and its store version and tables stay as they
    were)."""
    from sqlalchemy.exc import ArgumentError, DBAPIError

    from app.health.check import store_is_at_head
    from app.intercom.client import intercom_client_factory
    from app.intercom.errors import IntercomError
    from app.store.engine import create_database
    from app.store.migrate import MigrationsNotFound, describe_store_error
    from app.store.versioning import read_store_state
    from app.sync.baseline import WorkspaceChanged, fetch_workspace, plan_baseline
    from app.sync.dry_run import describe_plan

    try:
        at_head = store_is_at_head(settings.database_url)
    except MigrationsNotFound as exc:
        print(f"intercom-sync: {exc}", file=sys.stderr)
        return 2
    except (OSError, DBAPIError, ArgumentError) as exc:
        print(f"intercom-sync: {describe_store_error(settings.database_url, exc)}", file=sys.stderr)
        return 2
    if not at_head:
        print(
            "intercom-sync: the store does not exist or is not at the latest schema, and a dry "
            "run writes nothing (migrations included): run `intercom-sync migrate` first",
            file=sys.stderr,
        )
        return 2
    make_client = intercom_client_factory(settings)
    if make_client is None:
        print(
            "sync failed: intercom_not_configured: INTERCOM_ACCESS_TOKEN is not set",
            file=sys.stderr,
        )
        return 1

    async def fetch() -> Any:
        client = make_client()
        try:
            return await fetch_workspace(client, roles_supported=settings.roles_supported)
        finally:
            await client.aclose()

    print("dry run: fetching workspace, teammates and teams from Intercom", flush=True)
    try:
        fetched = asyncio.run(fetch())
    except IntercomError as exc:
        print(f"sync failed: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    print(f"fetched {len(fetched.admins)} teammates and {len(fetched.teams)} teams")
    expected = settings.intercom_workspace_id
    if expected and fetched.workspace.id_code != expected:
        print(
            f"sync failed: workspace_mismatch: the token belongs to workspace "
            f"{fetched.workspace.id_code}, not INTERCOM_WORKSPACE_ID={expected}",
            file=sys.stderr,
        )
        return 1
    db = create_database(settings.database_url)
    try:
        with db.reading() as session:
            state = read_store_state(session)
            plan = plan_baseline(
                session, state, fetched, max_removal_fraction=settings.max_removal_fraction
            )
            lines = describe_plan(plan, fetched)
    except WorkspaceChanged as exc:
        print(f"sync failed: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    finally:
        db.dispose()
    print("\n".join([*lines, *describe_stats(plan.stats.as_dict())]))
    if plan.blocked is not None:
        print(f"a real run would be blocked: {plan.blocked.code}: {plan.blocked.message}")
    # The outcome stays the last line, for scripts that read it.
    print(f"dry run: nothing was written (the store stays at version {plan.version_before})")
    return 0


def cmd_check(_args: argparse.Namespace) -> int:
    from app.health.check import CheckResult, check_configuration, check_intercom, check_store

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(CheckResult("configuration", False, str(exc)).line())
        return 1
    from app.observability.logs import configure_logging

    # The lines below are the output; a log line would only repeat one.
    configure_logging("critical", "console", settings.secret_values())
    results = [
        check_configuration(settings),
        check_store(settings.database_url),
        asyncio.run(check_intercom(settings)),
    ]
    for result in results:
        print(result.line(), flush=True)
    return 0 if all(result.ok for result in results) else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from app.simulator.demo import run_demo

    return run_demo(host=args.host, port=args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="intercom-sync",
        description="Sync Intercom teammates and teams into SQL and serve them to C1.",
    )
    parser.add_argument("--version", action="version", version=f"intercom-sync {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="migrate, then serve the API with uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument(
        "--graceful-timeout",
        type=int,
        default=20,
        help="seconds to finish in-flight work on SIGTERM",
    )
    serve.set_defaults(func=cmd_serve)
    sync = commands.add_parser("sync", help="run one baseline now and exit")
    sync.add_argument(
        "--force",
        action="store_true",
        help="apply the run even if it removes more than MAX_REMOVAL_FRACTION of teammates",
    )
    sync.add_argument(
        "--dry-run",
        action="store_true",
        help="fetch and print who a run would add, remove and change; write nothing",
    )
    sync.set_defaults(func=cmd_sync)
    migrate = commands.add_parser("migrate", help="apply database migrations (alembic upgrade)")
    migrate.set_defaults(func=cmd_migrate)
    check = commands.add_parser(
        "check", help="check the configuration, the store and Intercom's GET /me, one line each"
    )
    check.set_defaults(func=cmd_check)
    demo = commands.add_parser("demo", help="run against the bundled Intercom simulator")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    # The demo's tokens are its own published constants, and its curl lines must carry them.
    demo.set_defaults(func=cmd_demo, redact_output=False)
    return parser


class _RedactingStream:
    """stdout or stderr with every configured secret scrubbed from what is written."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        from app.observability.logs import scrub

        self._stream.write(scrub(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextmanager
def _redacted_output() -> Iterator[None]:
    """Every line a command prints passes the log redactor (which knows the secrets once the
    command has loaded its settings), whichever code printed it."""
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout = cast(TextIO, _RedactingStream(stdout))
    sys.stderr = cast(TextIO, _RedactingStream(stderr))
    try:
        yield
    finally:
        sys.stdout, sys.stderr = stdout, stderr


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with _redacted_output() if getattr(args, "redact_output", True) else nullcontext():
        try:
            code: int = args.func(args)
        except KeyboardInterrupt:
            if args.command == "serve":
                return 0
            print(f"intercom-sync {args.command}: interrupted", file=sys.stderr)
            return 130
    return code


if __name__ == "__main__":
    raise SystemExit(main())
