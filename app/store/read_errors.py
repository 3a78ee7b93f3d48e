"""What the read model (the C1 views and the activity reports) refuses to answer, as its own
exceptions: app.api.errors maps each kind to its HTTP status in one table."""

from __future__ import annotations


class ReadError(Exception):
    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class NotSynced(ReadError):
    """No baseline has succeeded yet: there is no snapshot, and no view, to serve."""

    code = "not_synced"

    def __init__(self) -> None:
        super().__init__(
            "no baseline sync has succeeded yet; an empty answer would read as "
            "'everyone lost access', so there is none until the first sync completes"
        )


class ActivityLogNotRead(ReadError):
    """The activity log was never read: every teammate would look dormant."""

    code = "activity_log_not_read"

    def __init__(self) -> None:
        super().__init__(
            "the activity log has not been read yet (see /readyz: ACTIVITY_LOG_ENABLED, and the "
            "Intercom app's 'Read admin activity logs' permission); without it every teammate "
            "would look dormant"
        )


class InvalidCursor(ReadError):
    code = "invalid_cursor"


class InvalidRequest(ReadError):
    code = "invalid_request"


class NotFound(ReadError):
    code = "not_found"


class Gone(ReadError):
    """The change feed cannot continue from there (`since_too_old`, `since_ahead_of_store`)."""
