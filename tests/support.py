"""Shared test machinery: the real app served by uvicorn on loopback (in a thread, or as a
separate process), settings for it, and small waiting helpers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn

from app.intercom.signature import sign_body
from app.main import create_app
from app.settings import Settings, load_settings
from app.simulator import SimulatorServer

ROOT = Path(__file__).resolve().parents[1]
READ_TOKEN = "test-read-token-0123456789"
OPERATOR_TOKEN = "test-operator-token-0123456789"
SIM_TOKEN = "test-intercom-token-0123456789"
SIM_SECRET = "test-client-secret-0123456789"

T = TypeVar("T")


def service_env(database_url: str, sim: SimulatorServer | None, **overrides: Any) -> dict[str, str]:
    """Environment variables for a service process pointed at `sim` and `database_url`."""
    env = {
        "DATABASE_URL": database_url,
        "INTERCOM_ACCESS_TOKEN": SIM_TOKEN if sim else "",
        "INTERCOM_API_BASE_URL": sim.url if sim else "",
        "INTERCOM_CLIENT_SECRET": SIM_SECRET,
        "READ_API_TOKENS": READ_TOKEN,
        "OPERATOR_API_TOKENS": OPERATOR_TOKEN,
        "RECONCILE_INTERVAL_SECONDS": "0",
        "SYNC_ON_STARTUP": "true",
        "INTERCOM_BACKOFF_INITIAL_SECONDS": "0.01",
        "INTERCOM_MAX_ATTEMPTS": "3",
        "INTERCOM_TIMEOUT_SECONDS": "5",
        "WEBHOOK_REFRESH_DEBOUNCE_SECONDS": "0.3",
        "LOG_LEVEL": "info",
        "LOG_FORMAT": "json",
    }
    env.update({key.upper(): str(value) for key, value in overrides.items()})
    return env


def make_settings(database_url: str, sim: SimulatorServer | None, **overrides: Any) -> Settings:
    """Settings as the service would read them from `service_env`, ignoring any `.env`."""
    env = service_env(database_url, sim, **overrides)
    return load_settings(_env_file=None, **{k.lower(): v for k, v in env.items()})


class ServiceServer:
    """The real app (lifespan and all) served by uvicorn in a thread on a loopback port."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ServiceServer:
        config = uvicorn.Config(
            self.app, lifespan="on", log_config=None, access_log=False, timeout_graceful_shutdown=5
        )
        self._server = uvicorn.Server(config)
        server = self._server
        self._thread = threading.Thread(
            target=lambda: server.run(sockets=[self._sock]), name="service", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the service did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(15)
        self._server = None

    def client(self, token: str | None = READ_TOKEN, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)

    def wait_ready(self, timeout: float = 30) -> dict[str, Any]:
        with httpx.Client(base_url=self.url, timeout=5) as client:

            def ready() -> dict[str, Any] | None:
                response = client.get("/readyz")
                return response.json() if response.status_code == 200 else None

            return wait_for(ready, timeout=timeout, what="the first baseline")


class ServiceProcess:
    """The service as a separate `intercom-sync serve` process, for crash and replica tests."""

    def __init__(self, env: dict[str, str], *, log_path: Path, port: int | None = None) -> None:
        self.env = {**os.environ, **env}
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, wait: bool = True) -> ServiceProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        if wait:
            self.wait_listening()
        return self

    def wait_listening(self, timeout: float = 30) -> None:
        def up() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"the service exited: see {self.log_path}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout=timeout, what="the service process to listen")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def client(self, token: str | None = READ_TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(
    predicate: Callable[[], T | None],
    *,
    timeout: float = 10,
    interval: float = 0.05,
    what: str = "a condition",
) -> T:
    """Poll until `predicate` returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def signed_headers(body: bytes, secret: str = SIM_SECRET) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Hub-Signature": sign_body(body, secret),
        "User-Agent": "intercom-parrot-service-client/1.0",
    }


def snapshot(client: httpx.Client, **params: Any) -> dict[str, Any]:
    response = client.get("/api/v1/snapshot", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def simulator_truth(sim: SimulatorServer) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(teammate id -> team ids, team id -> member ids) as the simulator holds them now."""
    with sim.workspace.lock:
        users = {a.id: set(a.team_ids) for a in sim.workspace.admins.values()}
        teams = {t.id: set(t.admin_ids) for t in sim.workspace.teams.values()}
    return users, teams


def served_truth(body: dict[str, Any]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    users = {u["id"]: set(u["team_ids"]) for u in body["users"]}
    teams = {t["id"]: set(t["member_ids"]) for t in body["teams"]}
    return users, teams


@contextmanager
def running_service(settings: Settings) -> Iterator[ServiceServer]:
    server = ServiceServer(settings).start()
    try:
        yield server
    finally:
        server.stop()
