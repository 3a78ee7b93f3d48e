"""The ASGI app (`app.main:app`): routes plus the lifespan that builds and stops the store,
the webhook inbox writer and inbox drainer, and the sync coordinator."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool

from app import __version__
from app.api import activity, c1, health, operators, provisioning, webhooks
from app.api.c1 import SnapshotFastPath
from app.api.errors import install_error_handlers
from app.api.middleware import HeadAsGetMiddleware, RequestIdMiddleware
from app.api.webhooks import WebhookFastPath
from app.health.store_metrics import build_store_registry
from app.intercom.client import intercom_client_factory
from app.observability.logs import configure_logging
from app.provisioning.service import Provisioner
from app.services import Services, build_coordinator
from app.settings import Settings, get_settings, startup_warnings
from app.snapshot.cache import SnapshotCache
from app.store.engine import create_database
from app.store.migrate import upgrade_to_head
from app.webhooks.apply_notification import apply_notification
from app.webhooks.inbox_drainer import InboxDrainer
from app.webhooks.inbox_writer import InboxWriter

logger = logging.getLogger(__name__)

DOCS_ASSETS_PATH = "/docs/assets"


def warn_about_settings(settings: Settings) -> None:
    for warning in startup_warnings(settings):
        logger.warning("%s", warning)


def create_app(settings: Settings | None = None, *, run_migrations: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        config = settings or get_settings()
        configure_logging(config.log_level, config.log_format, config.secret_values())
        warn_about_settings(config)
        if run_migrations:
            await run_in_threadpool(upgrade_to_head, config.database_url)
        db = create_database(config.database_url)
        coordinator = build_coordinator(db, config)
        drainer = InboxDrainer(db, config, request_refresh=coordinator.request_refresh)
        writer = InboxWriter(db, on_committed=drainer.wake_threadsafe)
        app.state.services = Services(
            settings=config,
            db=db,
            coordinator=coordinator,
            inbox_drainer=drainer,
            inbox_writer=writer,
            snapshots=SnapshotCache(db, roles_enabled=config.roles_supported),
            metrics_registry=build_store_registry(db),
        )
        app.state.provisioner = Provisioner(
            db,
            config,
            intercom_client_factory(config),
            request_refresh=coordinator.request_refresh,
            apply_notification=apply_notification,
        )
        writer.start()
        drainer.start()
        coordinator.start()
        logger.info("intercom-sync %s started", __version__)
        try:
            yield
        finally:
            # Stop taking new work first, then let claimed work finish, then close the store.
            # (uvicorn has stopped listening and drained in-flight requests by now.)
            logger.info("intercom-sync stopping: finishing claimed work")
            await coordinator.stop()
            writer.stop()
            await drainer.stop()
            app.state.services.snapshots.close()
            db.dispose()
            logger.info("intercom-sync stopped")

    # /docs and /redoc load Swagger UI and ReDoc from files shipped in fastapi-offline, not
    # from a CDN: the service often runs where only the API's own host is reachable.
    app = FastAPIOffline(
        static_url=DOCS_ASSETS_PATH,
        title="intercom-sync",
        version=__version__,
        summary="Who has access to an Intercom workspace, kept current for ConductorOne (C1).",
        lifespan=lifespan,
        # The service exports Prometheus metrics and JSON logs, not OpenTelemetry. Left on,
        # FastAPI asks the global OpenTelemetry providers on every request whether anyone
        # listens, a tenth of the cost of answering a 304.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # A path with a trailing slash is not a route: 404 in the error shape. Starlette would
        # answer 307 with a Location built from the client's Host header, before any auth.
        redirect_slashes=False,
    )
    install_error_handlers(app)
    # Added before RequestIdMiddleware, so they run inside it (request ids and access lines
    # apply to what they answer); the fast paths inside HeadAsGetMiddleware, so a HEAD is
    # answered as its GET.
    app.add_middleware(SnapshotFastPath)
    app.add_middleware(WebhookFastPath)
    app.add_middleware(HeadAsGetMiddleware)
    app.add_middleware(RequestIdMiddleware)
    app.include_router(webhooks.router)
    app.include_router(c1.router)
    app.include_router(activity.router)
    app.include_router(operators.router)
    app.include_router(provisioning.router)
    app.include_router(provisioning.audit_router)
    app.include_router(health.router)
    return app


app = create_app()
