"""`intercom-sync demo`: the service end to end against the bundled Intercom simulator.

Starts the simulator with a sample workspace on loopback, runs the service on a SQLite store
of its own in a temporary folder (deleted on exit), waits for the baseline, delivers a few
signed webhooks (a teammate added, one removed, an away-mode change), shows the snapshot
version move, and keeps serving with ready-to-paste curl lines until Ctrl-C, which stops it
with one line and exit code 0 (Ctrl-C is how a demo ends, not a failure).

The demo never uses DATABASE_URL: its sample workspace written into a real store would make
the next real sync fail (another workspace) and C1 would be served fake teammates.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from typing import Any

import httpx

from app.simulator.records import SimAdmin
from app.simulator.runner import SimulatorServer
from app.simulator.webhooks import admin_webhook_item, build_notification, encode_notification
from app.simulator.webhooks import send_webhook as sign_and_send
from app.simulator.workspace import generate_workspace

# Tokens are at least 16 characters, as the service requires.
READ_TOKEN = "demo-read-token-not-secret"
OPERATOR_TOKEN = "demo-operator-token-not-secret"
PROVISIONING_TOKEN = "demo-provisioning-token-not-secret"
SIM_TOKEN = "demo-intercom-token-not-secret"
SIM_SECRET = "demo-client-secret-not-secret"


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


def _deliver_and_wait(
    base: str, sim: SimulatorServer, topic: str, admin: SimAdmin, version: int
) -> int:
    """Send one change as its webhook and wait for the snapshot version to move past
    ``version``; returns the new version."""
    print(f"-- webhook {topic} ({admin.name}): {_deliver(base, sim, topic, admin)}")
    version = _wait_version_above(base, version)
    print(f"   snapshot version is now {version}")
    return version


def _walkthrough(base: str, sim: SimulatorServer) -> None:
    _wait_ready(base)  # ready = the start-up baseline succeeded
    print(
        f"\n== baseline succeeded: store version {_version(base)}, "
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
    version = _deliver_and_wait(base, sim, "admin.added_to_workspace", newcomer, version)
    leaver = next(a for a in workspace.admins.values() if a.id != newcomer.id)
    workspace.remove_admin(leaver.id)
    leaver.team_ids = []
    version = _deliver_and_wait(base, sim, "admin.removed_from_workspace", leaver, version)
    away = next(a for a in workspace.admins.values() if a.id != newcomer.id)
    away.away_mode_enabled = True
    workspace.upsert_admin(away)
    _deliver_and_wait(base, sim, "admin.away_mode_updated", away, version)
    _remove_through_the_api(base, sim, skip={newcomer.id, leaver.id, away.id})
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
  curl -s {operator} {base}/provisioning-requests
  curl -s {base}/readyz
  curl -s {base}/metrics | grep ^intercom_
  open {base}/docs for the OpenAPI reference.
Press Ctrl-C to stop.""",
        flush=True,
    )


def _remove_through_the_api(base: str, sim: SimulatorServer, *, skip: set[str]) -> None:
    """Provisioning: C1 removes a teammate through the service, which calls
    Intercom's DELETE /admins/remove and stores the removal at once."""
    # The simulator sends admin.removed_from_workspace to the service, as Intercom would.
    httpx.put(f"{sim.url}/_sim/provisioning", json={"webhook_urls": [f"{base}/webhooks/intercom"]})
    admins = list(sim.workspace.admins.values())
    target = os.environ["REMOVAL_REASSIGN_ADMIN_ID"]
    victim = next(a for a in admins[1:] if a.id not in skip | {target} and a.team_ids)
    curl = (
        f"curl -s -X DELETE -H 'Authorization: Bearer {PROVISIONING_TOKEN}' "
        f"{base}/api/v1/users/{victim.id}"
    )
    response = httpx.delete(
        f"{base}/api/v1/users/{victim.id}",
        headers={"Authorization": f"Bearer {PROVISIONING_TOKEN}"},
        timeout=60,
    )
    record = response.json()
    print(f"-- provisioning: remove {victim.name} through the API\n   {curl}")
    outcome = record.get("error") or record.get("intercom")
    print(f"   {response.status_code} result={record.get('result')} {outcome}")
    print(f"   snapshot version is now {_version(base)} (stored at once, before any webhook)")


def _walk_or_say(base: str, sim: SimulatorServer) -> None:
    try:
        _walkthrough(base, sim)
    except Exception as exc:  # a thread's traceback would bury the one line that matters
        print(f"intercom-sync demo: the walkthrough stopped: {exc}", file=sys.stderr, flush=True)


def bind_listener(host: str, port: int) -> socket.socket:
    """The demo's listening socket, bound before anything starts so that a port in use is
    said at once (the walkthrough would otherwise talk to whatever holds it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # As uvicorn does: lets a restarted demo bind past connections in TIME_WAIT; a port that
    # another process listens on still fails.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def run_demo(*, host: str = "127.0.0.1", port: int = 8000) -> int:
    try:
        return _run_demo(host, port)
    except KeyboardInterrupt:
        # Ctrl-C before the server took over the signal, or uvicorn re-raising it after its
        # graceful stop: the cleanup below `_run_demo` already ran.
        print("== demo stopped", flush=True)
        return 0


def _run_demo(host: str, port: int) -> int:
    try:
        listener = bind_listener(host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(
                f"intercom-sync demo: port {port} on {host} is in use (is `intercom-sync serve` "
                "or another demo running?); stop it or pick another with --port "
                "(make demo DEMO_ARGS='--port 8001')",
                file=sys.stderr,
            )
        else:
            print(f"intercom-sync demo: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    store_folder = tempfile.mkdtemp(prefix="intercom-sync-demo-")
    sim = SimulatorServer(
        generate_workspace(40, 8), access_token=SIM_TOKEN, client_secret=SIM_SECRET
    )
    try:
        sim.start()
        _serve(host, port, listener, sim, store_folder)
    finally:
        # A second Ctrl-C must not cut the clean-up short (and print a traceback instead).
        with contextlib.suppress(ValueError):  # only the main thread may set a handler
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        sim.stop()
        listener.close()
        shutil.rmtree(store_folder, ignore_errors=True)
    return 0


def _serve(
    host: str, port: int, listener: socket.socket, sim: SimulatorServer, store_folder: str
) -> None:
    import uvicorn

    from app import http_server

    os.environ.update(
        DATABASE_URL=f"sqlite:///{store_folder}/demo.db",
        INTERCOM_ACCESS_TOKEN=SIM_TOKEN,
        INTERCOM_API_BASE_URL=sim.url,
        INTERCOM_CLIENT_SECRET=SIM_SECRET,
        READ_API_TOKENS=READ_TOKEN,
        OPERATOR_API_TOKENS=OPERATOR_TOKEN,
        PROVISIONING_API_TOKENS=PROVISIONING_TOKEN,
        # A teammate the walkthrough leaves alone receives a removed teammate's conversations
        # (the last is Fin, the bot); being the target, they are never removed.
        REMOVAL_REASSIGN_ADMIN_ID=list(sim.workspace.admins)[-2],
        LOG_FORMAT=os.environ.get("LOG_FORMAT", "console"),
        LOG_LEVEL=os.environ.get("LOG_LEVEL", "warning"),
        SYNC_ON_STARTUP="true",
        INTERCOM_WORKSPACE_ID="",
    )
    from app.settings import get_settings

    get_settings.cache_clear()
    base = f"http://{host}:{port}"
    print(f"== Intercom simulator serving a sample workspace at {sim.url}")
    print(
        f"== starting intercom-sync on {base} with a store of its own in {store_folder} "
        "(deleted on exit; DATABASE_URL is not used)"
    )
    walkthrough = threading.Thread(target=_walk_or_say, args=(base, sim), daemon=True)
    walkthrough.start()
    # The same HTTP protocol as `serve` (header size and time limits): the demo is a server too.
    config = uvicorn.Config(
        "app.main:app",
        host=host,
        port=port,
        http=http_server.PROTOCOL,
        log_config=None,
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run(sockets=[listener])
