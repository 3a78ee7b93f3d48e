"""Run the simulator (or any small ASGI app) with uvicorn in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any, Self

import uvicorn
from starlette.types import ASGIApp

from app.simulator.faults import Fault
from app.simulator.server import create_simulator_app
from app.simulator.state import RecordedRequest, SimWorkspace
from app.simulator.workspace import generate_workspace

_START_TIMEOUT_SECONDS = 10.0


class UvicornThread:
    """Serves ``app`` on ``host`` from a daemon thread; the port is bound before uvicorn starts."""

    def __init__(
        self, app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0, name: str = "uvicorn"
    ) -> None:
        self.app = app
        self.host = host
        self._requested_port = port
        self._name = name
        self._sock: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _bind(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._requested_port))
            # A restart after stop() comes back on the same port, so clients keep their URL.
            self._requested_port = sock.getsockname()[1]
            self._sock = sock
        return self._sock

    @property
    def port(self) -> int:
        """The bound port (binding now if needed, so it is known before ``start``)."""
        port: int = self._bind().getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """``http://host:port`` of the server."""
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Self:
        """Start serving and return once the port accepts connections."""
        if self.running:
            return self
        sock = self._bind()
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            lifespan="off",
            access_log=False,
            # In-flight delayed answers must not hold stop() for long.
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        self._server, self._error = server, None

        def run() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as exc:  # reported by start() instead of dying silently
                self._error = exc

        self._thread = threading.Thread(target=run, name=self._name, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self._name} failed to start") from self._error
            time.sleep(0.005)
        with socket.create_connection((self.host, self.port), timeout=2):
            pass
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Shut down gracefully and join the thread (forcing it if it takes over ``timeout``)."""
        server, thread = self._server, self._thread
        if server is not None and thread is not None:
            server.should_exit = True
            thread.join(timeout)
            if thread.is_alive():
                server.force_exit = True
                thread.join(2.0)
        if self._sock is not None:
            # uvicorn closes the sockets it was given; this covers "bound but never started".
            self._sock.close()
            self._sock = None
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class SimulatorServer(UvicornThread):
    """The Intercom simulator on a loopback port, for tests, the demo and benchmarks."""

    def __init__(
        self,
        workspace: SimWorkspace | None = None,
        *,
        access_token: str = "sim-token",
        client_secret: str = "sim-secret",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.workspace = workspace if workspace is not None else generate_workspace()
        self.access_token = access_token
        self.client_secret = client_secret
        app = create_simulator_app(
            self.workspace, access_token=access_token, client_secret=client_secret
        )
        super().__init__(app, host=host, port=port, name="intercom-simulator")

    @property
    def auth_headers(self) -> dict[str, str]:
        """Headers that authenticate against this simulator."""
        return {"Authorization": f"Bearer {self.access_token}", "Accept": "application/json"}

    def add_fault(self, path: str = "*", status: int | None = None, **kwargs: Any) -> Fault:
        """Queue a ``Fault`` (see its fields) on the workspace."""
        return self.workspace.add_fault(Fault(path, status, **kwargs))

    def clear_faults(self) -> None:
        """Forget every queued fault."""
        self.workspace.clear_faults()

    def requests(self, path: str | None = None) -> list[RecordedRequest]:
        """The API requests received so far, optionally only those for ``path``."""
        return self.workspace.requests(path)

    def clear_requests(self) -> None:
        """Empty the request log."""
        self.workspace.clear_requests()
