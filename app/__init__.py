"""intercom-sync: who has access to an Intercom workspace, kept current for C1.

Layers, each importing only those below it (checked by `make lint`: lint-imports, with the
contracts in pyproject.toml):

1. entry points: `cli` (the `intercom-sync` command), `main` (the FastAPI app and its
   lifespan), `http_server` (uvicorn, as `serve` and the container run it)
2. `api`: thin routes, auth, dependencies (`api/deps.py`), middleware, and the one table that
   maps the read model's exceptions to HTTP statuses (`api/errors.py`)
3. `services`: composition, the long-lived parts of one process wired together
4. engines, which do not import each other (they are handed callbacks): `sync` (baseline,
   coordinator), `webhooks` (receive, inbox writer, inbox drainer), `snapshot` (C1 views and
   cache), `activity` (activity-log reader and reports), `provisioning`, `health` (readiness,
   store gauges, `intercom-sync check`)
5. `store` (SQL) and `intercom` (REST client, payloads), which do not know each other
6. leaves: `settings`, `observability` (logging, request ids, metrics), `core` (GC pause,
   time formatting)

`simulator` (the bundled Intercom simulator and the demo beside it) stands apart: only the
CLI reaches it.
"""

__version__ = "0.1.0"
