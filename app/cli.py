"""`intercom-sync serve | sync | migrate | demo` (spec §2)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from app.settings import ConfigError, Settings, load_settings

STATS_LINES = (
    ("teammates", "users_added", "users_updated", "users_removed"),
    ("teams", "teams_added", "teams_updated", "teams_removed"),
    ("memberships", "memberships_added", None, "memberships_removed"),
)


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


def cmd_migrate(_args: argparse.Namespace) -> int:
    from app.logging_setup import configure_logging

    settings = _settings_or_exit()
    configure_logging(settings.log_level, settings.log_format, settings.secret_values())
    _prepare_store_or_exit(settings)
    print("migrations applied: the store is at the latest schema")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.logging_setup import configure_logging

    settings = _settings_or_exit()
    configure_logging(settings.log_level, settings.log_format, settings.secret_values())
    _prepare_store_or_exit(settings)
    uvicorn.run(
        "app.main:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=None,
        # RequestIdMiddleware writes the access line (with the request id); uvicorn's own
        # would be formatted for every request only to be dropped.
        access_log=False,
        proxy_headers=True,
        timeout_graceful_shutdown=args.graceful_timeout,
    )
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from app.logging_setup import configure_logging
    from app.main import intercom_client_factory
    from app.settings import startup_warnings
    from app.store import sync_runs
    from app.store.engine import create_database
    from app.sync.coordinator import SyncCoordinator, process_owner

    settings = _settings_or_exit()
    # Progress and the one-line reason are printed; log lines would only repeat them.
    configure_logging("critical", "console", settings.secret_values())
    print("migrating the store")
    _prepare_store_or_exit(settings)
    # After the store: an unusable DATABASE_URL stays a one-line answer.
    for warning in startup_warnings(settings):
        print(f"warning: {warning}", file=sys.stderr)
    db = create_database(settings.database_url)
    force: bool = args.force

    async def run() -> int:
        coordinator = SyncCoordinator(db, settings, intercom_client_factory(settings))
        run_view, created = sync_runs.enqueue_run(
            db, trigger="cli", force=force, owner=process_owner()
        )
        if not created:
            print(
                f"sync failed: run {run_view.id} is already {run_view.status}; "
                "try again when it has finished",
                file=sys.stderr,
            )
            return 1
        if force:
            print("force: the mass-removal brake is off for this run")
        result = await coordinator.execute(
            run_view.id, force=force, trigger="cli", progress=lambda line: print(line, flush=True)
        )
        if result.status == "succeeded":
            for warning in result.warnings:  # items left as they were (spec §9)
                print(f"warning: {warning['resource_type']} {warning['id']}: {warning['reason']}")
            # The outcome stays the last line, for scripts that read it.
            print("\n".join([*describe_stats(result.stats), f"sync succeeded (run {result.id})"]))
            return 0
        reason = result.error_message or result.status
        print(f"sync {result.status}: {result.error_code}: {reason}", file=sys.stderr)
        return 1

    try:
        return asyncio.run(run())
    finally:
        db.dispose()


def cmd_demo(args: argparse.Namespace) -> int:
    from app.demo import run_demo

    return run_demo(host=args.host, port=args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="intercom-sync",
        description="Sync Intercom teammates and teams into SQL and serve them to C1.",
    )
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
    sync.set_defaults(func=cmd_sync)
    migrate = commands.add_parser("migrate", help="apply database migrations (alembic upgrade)")
    migrate.set_defaults(func=cmd_migrate)
    demo = commands.add_parser("demo", help="run against the bundled Intercom simulator")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
