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

Words (README "How it works" has the table):
- admin = teammate = user, one person with a seat in the workspace: "admin" where we talk to
  Intercom (`app.intercom`), "teammate" in prose, logs and errors, "user" in the store and in
  what C1 is served.
- baseline: one sync run, a full fetch written as one diff transaction; a reconcile is one the
  schedule starts, a resync one an operator asks for (`POST /resync`, `intercom-sync sync`), a
  refresh a debounced one that webhooks or provisioning ask for (`request_refresh`).
- webhook stages, in order: `receive` → `inbox_writer` → `inbox_drainer` →
  `apply_notification` (with `activity_evidence`); inbox rows carry an `InboxStatus`.
"""

__version__ = "0.1.0"
