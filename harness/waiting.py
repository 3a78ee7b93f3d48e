"""Waiting for a condition, and picking a free loopback port."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


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
    """Poll until `predicate` returns something truthy. After `timeout` it raises
    AssertionError, so that a test reports the wait as its failure."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)
