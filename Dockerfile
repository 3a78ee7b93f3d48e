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

# PYTHONPATH=/app: the package imports from the copy in /app (not the one installed in the venv),
# so app/store/migrate.py finds /app/alembic.ini and /app/migrations next to it (it locates them
# relative to its own file). The venv still provides the dependencies and the console script.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DATABASE_URL=sqlite:////data/intercom-sync.db

RUN groupadd --system --gid 10001 intercom \
    && useradd --system --uid 10001 --gid intercom --no-create-home \
         --home-dir /nonexistent --shell /usr/sbin/nologin intercom \
    && mkdir -p /data \
    && chown intercom:intercom /data \
    && chmod 0750 /data

COPY --from=builder /opt/venv /opt/venv

# Source, migrations and alembic.ini so `alembic upgrade head` also works from /app.
WORKDIR /app
COPY alembic.ini ./
COPY migrations/ ./migrations/
COPY app/ ./app/
RUN python -m compileall -q /app/app /app/migrations

USER intercom

EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; r = urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4); sys.exit(0 if r.status == 200 else 1)"]

ENTRYPOINT ["intercom-sync"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
