"""`intercom-sync demo`: the service end to end against the bundled Intercom simulator.

Starts the simulator with a sample workspace on loopback, runs the service on the default
SQLite store, waits for the baseline, delivers a few signed webhooks (a teammate added, one
removed, an away-mode change), shows the snapshot version move, and keeps serving with
ready-to-paste curl lines until Ctrl-C.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import httpx

from app.simulator.runner import SimulatorServer
from app.simulator.state import SimAdmin
from app.simulator.webhooks import admin_webhook_item, build_notification, encode_notification
from app.simulator.webhooks import send_webhook as sign_and_send
from app.simulator.workspace import generate_workspace

READ_TOKEN = "demo-read-token"
OPERATOR_TOKEN = "demo-operator-token"
SIM_TOKEN = "demo-intercom-token"
SIM_SECRET = "demo-client-secret"


def _wait_ready(base: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{base}/readyz", timeout=2)
            if response.status_code == 200:
                body: dict[str, Any] = response.json()
                return body
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError("the service did not become ready within a minute")


def _version(base: str) -> int:
    response = httpx.get(
        f"{base}/api/v1/snapshot", headers={"Authorization": f"Bearer {READ_TOKEN}"}, timeout=10
    )
    response.raise_for_status()
    version: int = response.json()["version"]
    return version


def _wait_version_above(base: str, version: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    current = _version(base)
    while current <= version and time.monotonic() < deadline:
        time.sleep(0.1)
        current = _version(base)
    return current


def _deliver(base: str, sim: SimulatorServer, topic: str, admin: SimAdmin) -> str:
    envelope = build_notification(
        topic, admin_webhook_item(admin), app_id=sim.workspace.id_code, created_at=int(time.time())
    )
    response = sign_and_send(f"{base}/webhooks/intercom", encode_notification(envelope), SIM_SECRET)
    return f"{response.status_code} {response.text}"


def _baseline(base: str, timeout: float = 60.0) -> dict[str, Any]:
    """Sync this run's simulator now. A store left by an earlier demo is recent enough that
    start-up skips its baseline, yet this simulator's sample workspace starts afresh."""
    headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    run: dict[str, Any] = httpx.post(f"{base}/resync", headers=headers, timeout=10).json()
    deadline = time.monotonic() + timeout
    while run["finished_at"] is None and time.monotonic() < deadline:
        time.sleep(0.1)
        run = httpx.get(f"{base}/sync-runs/{run['id']}", headers=headers, timeout=10).json()
    return run


def _walkthrough(base: str, sim: SimulatorServer) -> None:
    _wait_ready(base)
    run = _baseline(base)
    print(
        f"\n== baseline {run['status']}: store version {_version(base)}, "
        f"{len(sim.workspace.admins)} teammates, {len(sim.workspace.teams)} teams"
    )
    version = _version(base)
    workspace = sim.workspace
    newcomer = SimAdmin(
        id="991269999",
        name="Dana Newcomer",
        email="dana@acme.example",
        team_ids=[next(iter(workspace.teams))],
    )
    workspace.upsert_admin(newcomer)
    print(
        f"-- webhook admin.added_to_workspace ({newcomer.name}): "
        f"{_deliver(base, sim, 'admin.added_to_workspace', newcomer)}"
    )
    version = _wait_version_above(base, version)
    print(f"   snapshot version is now {version}")
    leaver = next(a for a in workspace.admins.values() if a.id != newcomer.id)
    workspace.remove_admin(leaver.id)
    leaver.team_ids = []
    print(
        f"-- webhook admin.removed_from_workspace ({leaver.name}): "
        f"{_deliver(base, sim, 'admin.removed_from_workspace', leaver)}"
    )
    version = _wait_version_above(base, version)
    print(f"   snapshot version is now {version}")
    away = next(a for a in workspace.admins.values() if a.id != newcomer.id)
    away.away_mode_enabled = True
    workspace.upsert_admin(away)
    print(
        f"-- webhook admin.away_mode_updated ({away.name}): "
        f"{_deliver(base, sim, 'admin.away_mode_updated', away)}"
    )
    version = _wait_version_above(base, version)
    print(f"   snapshot version is now {version}")
    read = f"-H 'Authorization: Bearer {READ_TOKEN}'"
    operator = f"-H 'Authorization: Bearer {OPERATOR_TOKEN}'"
    print(
        f"""
== intercom-sync is serving on {base} (Intercom simulator at {sim.url}). Try:
  curl -s {read} {base}/api/v1/snapshot | python3 -m json.tool | head -60
  curl -s {read} '{base}/api/v1/users?limit=5'
  curl -s {read} '{base}/api/v1/changes?since=0&limit=20'
  curl -s -X POST {operator} {base}/resync
  curl -s {operator} {base}/sync-runs
  curl -s {operator} '{base}/webhook-events?limit=5'
  curl -s {base}/readyz
  curl -s {base}/metrics | grep ^intercom_
  open {base}/docs for the OpenAPI reference.
Press Ctrl-C to stop.""",
        flush=True,
    )


def run_demo(*, host: str = "127.0.0.1", port: int = 8000) -> int:
    import uvicorn

    sim = SimulatorServer(
        generate_workspace(40, 8), access_token=SIM_TOKEN, client_secret=SIM_SECRET
    )
    sim.start()
    os.environ.update(
        INTERCOM_ACCESS_TOKEN=SIM_TOKEN,
        INTERCOM_API_BASE_URL=sim.url,
        INTERCOM_CLIENT_SECRET=SIM_SECRET,
        READ_API_TOKENS=READ_TOKEN,
        OPERATOR_API_TOKENS=OPERATOR_TOKEN,
        LOG_FORMAT=os.environ.get("LOG_FORMAT", "console"),
        LOG_LEVEL=os.environ.get("LOG_LEVEL", "warning"),
        SYNC_ON_STARTUP="true",
        INTERCOM_WORKSPACE_ID="",
    )
    from app.settings import get_settings

    get_settings.cache_clear()
    base = f"http://{host}:{port}"
    print(f"== Intercom simulator serving a sample workspace at {sim.url}")
    print(f"== starting intercom-sync on {base} (store: {get_settings().database_url})")
    walkthrough = threading.Thread(target=_walkthrough, args=(base, sim), daemon=True)
    walkthrough.start()
    try:
        uvicorn.run(
            "app.main:app", host=host, port=port, log_config=None, timeout_graceful_shutdown=5
        )
    finally:
        sim.stop()
    return 0
