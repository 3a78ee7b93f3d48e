# syntax=docker/dockerfile:1
#
# intercom-sync container image.
#
#   docker build -t intercom-sync .
#   docker run --rm -p 8000:8000 -v intercom-data:/data --env-file .env intercom-sync
#
# The default store is SQLite at /data/intercom-sync.db (mount a volume on /data to keep it);
# set DATABASE_URL=postgresql://... for PostgreSQL (see docker-compose.yml). `serve` applies the
# migrations before it listens. Other sub-commands work too, e.g. `docker run ... intercom-sync sync`.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Dependencies first (pinned by the lock file) so this layer is cached across code changes.
COPY requirements.lock ./
RUN pip install -r requirements.lock

# Then the project itself, without re-resolving dependencies.
COPY pyproject.toml README.md ./
COPY app/ ./app/
RUN pip install --no-deps .

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="intercom-sync" \
      org.opencontainers.image.description="Syncs Intercom teammates and teams into a SQL store and serves them to ConductorOne (C1)."

# The package and its console script live in the virtualenv built above. alembic.ini and
# migrations/ are not part of the package: they go to /app, and ALEMBIC_CONFIG points
# app/store/migrate.py (and a plain `alembic upgrade head` run from /app) at them.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ALEMBIC_CONFIG=/app/alembic.ini \
    DATABASE_URL=sqlite:////data/intercom-sync.db

RUN groupadd --system --gid 10001 intercom \
    && useradd --system --uid 10001 --gid intercom --no-create-home \
         --home-dir /nonexistent --shell /usr/sbin/nologin intercom \
    && mkdir -p /data \
    && chown intercom:intercom /data \
    && chmod 0750 /data

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
COPY alembic.ini ./
COPY migrations/ ./migrations/
RUN python -m compileall -q /app/migrations

USER intercom

EXPOSE 8000

# `serve` runs uvicorn as app/http_server.py sets it up, which holds the HTTP edge limits itself
# (header block over 16 KiB: 431; headers unfinished after 10 s: disconnected), so the image
# needs no proxy for them; tests/test_container.py runs this CMD to check it.
#
# `serve` drains requests for up to --graceful-timeout seconds on SIGTERM, then stops its
# background work: give the container longer than that (docker stop -t 30, compose
# stop_grace_period, Kubernetes terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; r = urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4); sys.exit(0 if r.status == 200 else 1)"]

ENTRYPOINT ["intercom-sync"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--graceful-timeout", "20"]
