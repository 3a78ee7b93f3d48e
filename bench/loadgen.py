"""A closed-loop HTTP/1.1 load generator in pure Python (asyncio protocols, uvloop if present).

It runs as its own process (`python -m bench.loadgen`, a JSON spec on stdin, a JSON result on
stdout) pinned to one core, so it never competes with the server for the GIL and, on a
two-core machine, not for the CPU either. Each connection keeps one request in flight (like
`wrk`): it sends the next request as soon as the previous answer is complete. Requests are
either one fixed request repeated, or signed webhook deliveries generated on the fly, each
with its own notification id.

Two modes: `duration` (warm up, then count answers completed inside a timed window) and
`total` (send exactly N requests and time the whole run).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.events import delivery_body, webhook_request


def pin_to_cpu(cpu: int | None) -> None:
    """Pin this process to `cpu` when the platform allows it and the core exists."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return
    try:
        if cpu in os.sched_getaffinity(0):
            os.sched_setaffinity(0, {cpu})
    except OSError:
        pass


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


@dataclass
class _Run:
    next_request: Callable[[], bytes | None]
    window_start: float
    window_end: float
    count_all: bool
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    body_bytes: int = 0
    first_send: float | None = None
    last_done: float = 0.0
    open_connections: int = 0
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, status: int, started: float, done: float, size: int) -> None:
        if self.count_all or self.window_start <= done <= self.window_end:
            self.latencies.append(done - started)
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self.body_bytes += size
        self.last_done = done

    def connection_closed(self) -> None:
        self.open_connections -= 1
        if self.open_connections <= 0:
            self.finished.set()


class _Connection(asyncio.Protocol):
    """One keep-alive connection with one request in flight."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.started = 0.0
        self.remaining: int | None = None  # body bytes still due for the answer in progress
        self.status = 0
        self.size = 0
        self.in_flight = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.send_next()

    def send_next(self) -> None:
        request = self.run.next_request()
        assert self.transport is not None
        if request is None:
            self.transport.close()
            return
        self.started = time.perf_counter()
        if self.run.first_send is None:
            self.run.first_send = self.started
        self.in_flight = True
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        if self.remaining is not None:
            if len(data) < self.remaining:
                self.remaining -= len(data)
                return
            data = data[self.remaining :]
            self.remaining = 0
            self._complete()
            if not data:
                return
        self.buffer += data
        self._parse()

    def _parse(self) -> None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).decode("latin-1")
        lines = head.split("\r\n")
        try:
            self.status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError):
            self._fail(f"bad status line {lines[0]!r}")
            return
        length: int | None = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            lowered = name.strip().lower()
            if lowered == "content-length":
                length = int(value.strip())
            elif lowered == "transfer-encoding" and "chunked" in value.lower():
                self._fail("chunked answers are not supported by this generator")
                return
        if length is None:
            if self.status in (204, 304) or self.status < 200:
                length = 0
            else:
                self._fail(f"answer {self.status} without Content-Length")
                return
        body = bytes(self.buffer[end + 4 :])
        self.buffer.clear()
        self.size = length
        if len(body) < length:
            self.remaining = length - len(body)
            return
        self.remaining = 0
        rest = body[length:]
        self._complete()
        if rest:
            self.buffer += rest
            self._parse()

    def _complete(self) -> None:
        done = time.perf_counter()
        self.remaining = None
        self.in_flight = False
        self.run.record(self.status, self.started, done, self.size)
        self.send_next()

    def _fail(self, reason: str) -> None:
        self.run.errors.append(reason)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        if self.in_flight:
            self.run.errors.append(f"connection lost mid-request: {exc!r}")
        self.run.connection_closed()


def _request_source(spec: dict[str, Any]) -> Callable[[int], bytes]:
    request = spec["request"]
    host = f"{spec['host']}:{spec['port']}"
    if request["kind"] == "static":
        raw = request["raw"].encode("latin-1")
        return lambda _index: raw
    if request["kind"] == "webhooks":
        admins = request["admins"]
        secret = request["secret"]
        path = request.get("path", "/webhooks/intercom")

        def make(index: int) -> bytes:
            body = delivery_body(
                request["start"] + index,
                admins,
                app_id=request["app_id"],
                tag=request["tag"],
                base_created_at=request["base_created_at"],
            )
            return webhook_request(body, secret=secret, host=host, path=path)

        return make
    raise ValueError(f"unknown request kind {request['kind']!r}")


async def _drive(spec: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    source = _request_source(spec)
    total: int | None = spec.get("total")
    warmup = float(spec.get("warmup", 0.0))
    duration = float(spec.get("duration") or 0.0)
    begin = time.perf_counter()
    window_start = begin + warmup
    window_end = window_start + duration
    sent = 0

    def next_request() -> bytes | None:
        nonlocal sent
        if total is not None:
            if sent >= total:
                return None
        elif time.perf_counter() >= window_end:
            return None
        request = source(sent)
        sent += 1
        return request

    run = _Run(next_request, window_start, window_end, count_all=total is not None)
    connections = int(spec["connections"])
    run.open_connections = connections
    results = await asyncio.gather(
        *(
            loop.create_connection(lambda: _Connection(run), spec["host"], spec["port"])
            for _ in range(connections)
        ),
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, BaseException):
            run.errors.append(f"could not connect: {result!r}")
            run.connection_closed()
    timeout = float(spec.get("timeout", 600))
    try:
        await asyncio.wait_for(run.finished.wait(), timeout)
    except TimeoutError:
        run.errors.append(f"the run did not finish within {timeout:g}s")
    if total is not None:
        elapsed = max(1e-9, run.last_done - (run.first_send or begin))
    else:
        elapsed = duration
    latencies = sorted(run.latencies)
    completed = len(latencies)
    return {
        "completed": completed,
        "sent": sent,
        "elapsed_s": elapsed,
        "rps": completed / elapsed if elapsed else 0.0,
        "latency_ms": {
            "p50": percentile(latencies, 0.50) * 1000,
            "p90": percentile(latencies, 0.90) * 1000,
            "p99": percentile(latencies, 0.99) * 1000,
            "max": (latencies[-1] * 1000) if latencies else float("nan"),
        },
        "statuses": {str(status): count for status, count in sorted(run.statuses.items())},
        "errors": run.errors[:20],
        "error_count": len(run.errors),
        "body_bytes": run.body_bytes,
        "connections": connections,
        "cpu": spec.get("cpu"),
    }


def main() -> int:
    spec = json.loads(sys.stdin.read())
    pin_to_cpu(spec.get("cpu"))
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        pass
    result = asyncio.run(_drive(spec))
    sys.stdout.write(json.dumps(result))
    return 0


class LoadRun:
    """A load generator process: `start()`, do other things meanwhile, then `wait()`."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> LoadRun:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.loadgen"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(self.spec).encode())
        self.process.stdin.close()
        return self

    def wait(self) -> dict[str, Any]:
        assert self.process is not None
        timeout = float(self.spec.get("timeout", 600)) + 60
        with self.process as process:  # closes the pipes at the end
            out = process.stdout.read() if process.stdout else b""
            err = process.stderr.read() if process.stderr else b""
            code = process.wait(timeout)
        if code != 0:
            raise RuntimeError(f"the load generator failed ({code}): {err.decode()[-2000:]}")
        result: dict[str, Any] = json.loads(out)
        return result


def run_load(spec: dict[str, Any]) -> dict[str, Any]:
    return LoadRun(spec).start().wait()


if __name__ == "__main__":
    raise SystemExit(main())
