"""Logging: JSON lines (or console text) on stderr, with the request id and sync run id of the
current context, and every configured secret scrubbed from every line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from contextvars import ContextVar
from datetime import UTC, datetime
from urllib.parse import quote, quote_plus

import orjson

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
run_id_var: ContextVar[str | None] = ContextVar("run_id", default=None)

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
# Context ids are written above only when set; uvicorn's ANSI-coloured copy of the message
# is noise in a JSON line.
_DROPPED = frozenset({"color_message", "request_id", "run_id"})
# Shorter values would redact ordinary words; every token we accept is 16 characters or more.
MIN_REDACTED_LENGTH = 4


def secret_forms(secret: str) -> set[str]:
    """The ways a secret can be spelled in error text: as itself, escaped as str and bytes
    reprs and JSON strings write it (an httpx header error shows `b'Bearer tok\\n'`), and
    percent-encoded as a URL carries it."""
    forms = {secret, repr(secret)[1:-1], ascii(secret)[1:-1], orjson.dumps(secret).decode()[1:-1]}
    for encoding in ("utf-8", "latin-1"):
        try:
            forms.add(repr(secret.encode(encoding))[2:-1])
        except UnicodeEncodeError:
            continue
    forms.add(quote(secret, safe=""))
    forms.add(quote_plus(secret, safe=""))
    # The JSON formatter escapes the message once more: a repr's backslash becomes two.
    forms |= {orjson.dumps(form).decode()[1:-1] for form in list(forms)}
    return {form for form in forms if len(form) >= MIN_REDACTED_LENGTH}


class Redactor:
    """Replaces every registered secret, in each of its spellings, with `[redacted]`. One
    instance (REDACTOR) serves every sink: log lines, run records and CLI output."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets: list[str] = []
        self.register(secrets)

    def register(self, secrets: Iterable[str]) -> None:
        """Redact exactly these secrets from now on (replacing the previous set)."""
        forms: set[str] = set()
        for secret in secrets:
            if len(secret) >= MIN_REDACTED_LENGTH:
                forms |= secret_forms(secret)
        # Longest first, so a secret containing another is replaced whole.
        self.secrets = sorted(forms, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "[redacted]")
        return text


REDACTOR = Redactor()


def scrub(text: str) -> str:
    """`text` without any configured secret: for every message that leaves the process."""
    return REDACTOR.scrub(text)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.run_id = run_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    # Attributes every record has, written under their own names or not at all; the rest are
    # a call's `extra` fields. One set lookup per attribute: this runs for every request.
    _NOT_EXTRA = frozenset(_RESERVED | _DROPPED | {"ts", "level", "logger"})

    def __init__(self) -> None:
        super().__init__()
        self._second: int | None = None
        self._second_text = ""

    def _timestamp(self, created: float) -> str:
        """ISO 8601 UTC with milliseconds, formatting the date and time once per second."""
        second = int(created)
        if second != self._second:
            self._second_text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = second
        millis = min(999, int((created - second) * 1000))
        return f"{self._second_text}.{millis:03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": self._timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("request_id", "run_id"):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        not_extra = self._NOT_EXTRA
        for key, value in record.__dict__.items():
            if key not in not_extra:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        line = orjson.dumps(entry, default=str).decode()
        return REDACTOR.scrub(line)


class ConsoleFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = " ".join(
            f"{key}={getattr(record, key)}"
            for key in ("request_id", "run_id")
            if getattr(record, key, None)
        )
        return REDACTOR.scrub(f"{text} [{ids}]" if ids else text)


def configure_logging(level: str, fmt: str, secrets: list[str]) -> None:
    """Route the service's and uvicorn's loggers through one scrubbed handler."""
    REDACTOR.register(secrets)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_intercom_sync", False):
            root.removeHandler(existing)
    handler._intercom_sync = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Python warnings would otherwise reach stderr as bare text between the JSON lines.
    logging.captureWarnings(True)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers = []
        uvicorn_logger.propagate = True
    # Per-request access lines come from our own middleware, with the request id.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Alembic (1.15+) says which of its autogenerate plugins it set up on every migration:
    # five lines at every start that tell an operator nothing.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
