"""The real service on loopback, for tests and benchmarks: the app served by uvicorn in a thread,
or any server (the service's `serve`, a reference server) as a child process; the environment
and settings that point it at the simulator; and small probes of what it serves."""

from __future__ import annotations

import contextlib
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
from typing import Any, Self, TypedDict, Unpack

import httpx
import uvicorn

from app.intercom.signature import sign_body
from app.main import create_app
from app.settings import Settings, load_settings
from app.simulator import SimulatorServer
from harness.waiting import free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]
READ_TOKEN = "test-read-token-0123456789"
OPERATOR_TOKEN = "test-operator-token-0123456789"
SIM_TOKEN = "test-intercom-token-0123456789"
SIM_SECRET = "test-client-secret-0123456789"


def base_env(database_url: str, sim: SimulatorServer | None, **overrides: Any) -> dict[str, str]:
    """The settings every service started here shares: `database_url`, the simulator (started
    with SIM_TOKEN and SIM_SECRET), the harness's API tokens, no reconcile schedule, JSON logs.
    The rest stays at the production defaults unless `overrides` (setting names, any case)
    say else."""
    env = {
        "DATABASE_URL": database_url,
        "INTERCOM_ACCESS_TOKEN": SIM_TOKEN if sim else "",
        "INTERCOM_API_BASE_URL": sim.url if sim else "",
        "INTERCOM_CLIENT_SECRET": SIM_SECRET,
        "READ_API_TOKENS": READ_TOKEN,
        "OPERATOR_API_TOKENS": OPERATOR_TOKEN,
        "RECONCILE_INTERVAL_SECONDS": "0",
        "LOG_LEVEL": "info",
        "LOG_FORMAT": "json",
    }
    env.update({key.upper(): str(value) for key, value in overrides.items()})
    return env


def service_env(database_url: str, sim: SimulatorServer | None, **overrides: Any) -> dict[str, str]:
    """The tests' service: `base_env` with a start-up sync, and retries, timeouts and the
    refresh debounce short enough for a test to wait on."""
    defaults = {
        "SYNC_ON_STARTUP": "true",
        "INTERCOM_BACKOFF_INITIAL_SECONDS": "0.01",
        "INTERCOM_MAX_ATTEMPTS": "3",
        "INTERCOM_TIMEOUT_SECONDS": "5",
        "WEBHOOK_REFRESH_DEBOUNCE_SECONDS": "0.3",
    }
    return base_env(database_url, sim, **{**defaults, **overrides})


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
        return httpx.Client(base_url=self.url, headers=headers, **{"timeout": 30, **kwargs})

    def wait_ready(self, timeout: float = 30) -> dict[str, Any]:
        with httpx.Client(base_url=self.url, timeout=5) as client:

            def ready() -> dict[str, Any] | None:
                response = client.get("/readyz")
                if response.status_code != 200:
                    return None
                body: dict[str, Any] = response.json()
                # The activity log is read right after each baseline, on its own: a test that
                # counts the calls Intercom receives starts once that first read is over.
                read = body.get("activity_log_read_to") is not None or any(
                    problem.startswith("activity_log_") for problem in body["problems"]
                )
                return body if read or not self.settings.activity_log_enabled else None

            return wait_for(ready, timeout=timeout, what="the first baseline")


_SETTING_NAMES = frozenset(name.upper() for name in Settings.model_fields)


def _pinned(cpu: int | None) -> Callable[[], None] | None:
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return None

    def pin() -> None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {cpu})

    return pin


def read_proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of `pid`, in kB."""
    values: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


class Where(TypedDict, total=False):
    """Where a server process runs: its port (default: a free one), working folder (default:
    the repository) and the one core it is pinned to (default: none)."""

    port: int | None
    cwd: Path
    cpu: int | None


class ServerProcess:
    """A child process serving HTTP on a loopback port, with its output in `log_path`; up once
    `/healthz` answers 200. `cpu` pins it to one core (the benchmarks' placement)."""

    def __init__(
        self, argv: list[str], *, env: dict[str, str], log_path: Path, **where: Unpack[Where]
    ) -> None:
        self.argv = argv
        self.env = env
        self.port = where.get("port") or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.cwd = where.get("cwd", ROOT)
        self.cpu = where.get("cpu")
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return self.argv

    def start(self, *, wait: bool = True, timeout: float = 30) -> Self:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_pinned(self.cpu),
            )
        if wait:
            self.wait_listening(timeout)
        return self

    def wait_listening(self, timeout: float = 30) -> None:
        self._wait_answer("/healthz", timeout=timeout, what="to listen")

    def wait_ready(self, timeout: float = 60) -> dict[str, Any]:
        """`/readyz` once it answers 200: the service's first baseline has succeeded."""
        return self._wait_answer("/readyz", timeout=timeout, what="to be ready")

    def _wait_answer(self, path: str, *, timeout: float, what: str) -> dict[str, Any]:
        def answer() -> dict[str, Any] | None:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.command()[1:4]} exited: see {self.log_path}")
            try:
                response = httpx.get(f"{self.url}{path}", timeout=5)
            except httpx.HTTPError:
                return None
            if response.status_code != 200:
                return None
            body: dict[str, Any] = response.json()
            return body

        return wait_for(answer, timeout=timeout, interval=0.05, what=f"{self.url} {what}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def memory_kb(self) -> dict[str, int]:
        return read_proc_status(self.pid)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, then the exit code; raises subprocess.TimeoutExpired if it does not exit."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM, and SIGKILL if it has not exited after `timeout`."""
        if self.process is None:
            return
        try:
            self.terminate(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self.process = None

    def client(self, token: str | None = READ_TOKEN, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, **{"timeout": 30, **kwargs})

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ServiceProcess(ServerProcess):
    """The service as a separate `intercom-sync serve` process, for crash, replica and
    benchmark runs. The service's settings come from `env` alone: any the caller's own
    environment sets are left out, so a developer's shell cannot leak into a run."""

    def __init__(self, env: dict[str, str], *, log_path: Path, **where: Unpack[Where]) -> None:
        inherited = {k: v for k, v in os.environ.items() if k.upper() not in _SETTING_NAMES}
        super().__init__([], env={**inherited, **env}, log_path=log_path, **where)

    def command(self) -> list[str]:
        serve = ["serve", "--host", "127.0.0.1", "--port", str(self.port)]
        return [sys.executable, "-m", "app.cli", *serve]


# Starts replicas: `count` (default 2) and service settings as keyword arguments.
ReplicaFactory = Callable[..., list[ServiceProcess]]


class ReplicaSet:
    """Service processes on one database and simulator, stopped together at the end."""

    def __init__(self, database_url: str, sim: SimulatorServer, folder: Path) -> None:
        self.database_url = database_url
        self.sim = sim
        self.folder = folder
        self.started: list[ServiceProcess] = []

    def start(self, count: int = 2, **overrides: Any) -> list[ServiceProcess]:
        """Start `count` processes at once (so they also race to migrate) and wait until
        each serves a successful baseline."""
        replicas = [
            ServiceProcess(
                service_env(self.database_url, self.sim, **overrides),
                log_path=self.folder / f"replica-{len(self.started) + index}.log",
            )
            for index in range(count)
        ]
        self.started.extend(replicas)
        for replica in replicas:
            replica.start(wait=False)
        for replica in replicas:
            replica.wait_listening(timeout=60)
            replica.wait_ready()
        return replicas

    def close(self) -> None:
        for replica in self.started:
            try:
                replica.terminate(timeout=30)
            except Exception:
                replica.kill()


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
