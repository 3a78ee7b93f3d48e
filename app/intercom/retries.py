"""How long to wait before trying Intercom again: the bounds a caller configures, the
wait a rate limit asks for, and the backoff between other failures.

Reads and writes retry the same failures (`errors.RETRYABLE`) on different terms: a read
waits out a rate limit up to `max_rate_limit_wait_seconds` and backs off with jitter (a run
has time); a write backs off without jitter inside a time budget, because someone (C1) is
waiting for the answer. Both sets of terms live here so that they can be read side by side.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from tenacity import RetryCallState, wait_exponential_jitter

from app.intercom.errors import IntercomError, IntercomRateLimited

# Past the reset time Intercom names, so that the next attempt does not land a moment early.
RESET_MARGIN_SECONDS = 0.05


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    backoff_initial_seconds: float = 0.8
    backoff_max_seconds: float = 30.0
    max_rate_limit_wait_seconds: float = 60.0


def _until_reset(exc: IntercomError) -> float | None:
    if isinstance(exc, IntercomRateLimited) and exc.reset_at is not None:
        return max(0.0, exc.reset_at - time.time()) + RESET_MARGIN_SECONDS
    return None


def read_wait(policy: RetryPolicy, state: RetryCallState) -> float:
    """The wait before a read's next attempt (tenacity's `wait`)."""
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, IntercomError):
        until_reset = _until_reset(exc)
        if until_reset is not None:
            return min(until_reset, policy.max_rate_limit_wait_seconds)
    # Jitter scales with the initial backoff (tenacity's default is a flat 0-1 s, which would
    # swamp a short configured backoff); `multiplier` is tenacity's name for the initial wait.
    initial = policy.backoff_initial_seconds
    backoff = wait_exponential_jitter(
        multiplier=initial, max=policy.backoff_max_seconds, jitter=initial
    )
    return float(backoff(state))


def write_wait(policy: RetryPolicy, exc: IntercomError, attempt: int) -> float:
    """The wait before a write's next attempt, after `attempt` attempts failed with `exc`
    (the caller checks it against the write's time budget)."""
    until_reset = _until_reset(exc)
    if until_reset is not None:
        return until_reset
    initial = policy.backoff_initial_seconds
    return min(initial * 2.0 ** (attempt - 1), policy.backoff_max_seconds)
