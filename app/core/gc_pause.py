"""Pausing the garbage collector around bulk JSON builds.

Building tens of thousands of short-lived, acyclic dicts triggers collections that walk every
long-lived object in the process, which adds a third or more to a snapshot build (and to the
simulator's list bodies). Nothing cyclic is created inside, so pausing is safe.
"""

from __future__ import annotations

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
