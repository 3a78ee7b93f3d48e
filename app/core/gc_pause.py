"""Pausing the garbage collector around bulk JSON builds and parses (the one home for it).

Building tens of thousands of short-lived, acyclic dicts triggers collections that walk every
long-lived object in the process, which adds a third or more to a snapshot build (and to the
simulator's list bodies, and to a baseline's diff and fetch). Nothing cyclic is created inside,
so pausing is safe.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextmanager
def gc_paused_at_most(limit_seconds: float) -> Iterator[None]:
    """Pause the garbage collector for the block, but for no longer than `limit_seconds`: for
    a block that awaits (other requests keep running meanwhile), inside a running event loop."""
    if not gc.isenabled():  # someone else's pause: leave it to them
        yield
        return
    gc.disable()
    resume = asyncio.get_running_loop().call_later(limit_seconds, gc.enable)
    try:
        yield
    finally:
        resume.cancel()
        gc.enable()
