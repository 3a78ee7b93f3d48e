"""Configuration from the environment (and `.env`), under exactly the names of the product spec.

The Settings class and its loading live here; checks of one value live beside it, each in a
module that reads alone: secret_values.py (tokens and secrets), addresses.py (URLs and hosts),
unknown_variables.py (names that look like ours but are not).
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.settings.addresses import is_in_memory_sqlite, is_insecure_base_url, is_loopback_host
from app.settings.secret_values import clean_secret, database_password, split_tokens
from app.settings.unknown_variables import configured_names, unknown_variable_warnings

logger = logging.getLogger(__name__)

US_BASE_URL = "https://api.intercom.io"
REGION_BASE_URLS = {
    "US": US_BASE_URL,
    "EU": "https://api.eu.intercom.io",
    "AU": "https://api.au.intercom.io",
}
DEFAULT_DATABASE_URL = "sqlite:///./data/intercom-sync.db"
MIN_API_TOKEN_LENGTH = 16
_API_VERSION = re.compile(r"^\d+\.\d+$")
PREVIEW_API_VERSION = "Preview"
# Reconciling more often than this only loads Intercom: a webhook keeps the store current
# between baselines (0.5 s gave 22 baselines in 10 s).
MIN_RECONCILE_INTERVAL_SECONDS = 60

# Secret variables: stripped of surrounding whitespace, refused with inner whitespace, control
# or non-ASCII characters (none of them can travel in an HTTP header or be typed by a client).
SECRET_VARIABLES = ("intercom_access_token", "intercom_client_secret")
# Comma-separated token lists under the same rule; a new list is one more name here.
TOKEN_LIST_VARIABLES = ("read_api_tokens", "operator_api_tokens", "provisioning_api_tokens")

# Intercom's teammate ids are decimal digits (strings in REST, numbers in webhooks).
_ADMIN_ID = re.compile(r"^[0-9]{1,20}$")


class ConfigError(Exception):
    """A variable is malformed; the message names it and never echoes secret values."""


class Settings(BaseSettings):
    """Every knob of the service. Field names are the environment variable names, lowercased."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    intercom_access_token: SecretStr | None = None
    intercom_api_base_url: str = US_BASE_URL
    intercom_api_version: str = "2.14"
    intercom_allow_insecure_base_url: bool = False
    intercom_client_secret: SecretStr | None = None
    intercom_workspace_id: str | None = None
    database_url: str = DEFAULT_DATABASE_URL
    read_api_tokens: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    operator_api_tokens: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    provisioning_api_tokens: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    removal_reassign_admin_id: str | None = None
    protected_admin_ids: Annotated[list[str], NoDecode] = Field(default_factory=list)
    reconcile_interval_seconds: float = Field(default=900, ge=0)
    reconcile_allow_short_interval: bool = False
    sync_on_startup: bool = True
    max_removal_fraction: float = Field(default=0.25, ge=0, le=1)
    change_log_retention_days: float = Field(default=30, gt=0)
    webhook_retention_days: float = Field(default=7, ge=7)
    webhook_refresh_debounce_seconds: float = Field(default=2.0, ge=0)
    intercom_timeout_seconds: float = Field(default=30.0, gt=0)
    intercom_max_attempts: int = Field(default=5, ge=1)
    intercom_max_rate_limit_wait_seconds: float = Field(default=60.0, ge=0)
    intercom_backoff_initial_seconds: float = Field(default=0.8, ge=0)
    # Usage evidence from Intercom's admin activity log.
    activity_log_enabled: bool = True
    activity_log_backfill_days: int = Field(default=90, ge=1, le=730)
    access_event_retention_days: float = Field(default=400, gt=0)
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    log_format: Literal["json", "console"] = "json"

    # Warnings found while loading (variables that look like ours but are not), for
    # startup_warnings; set by load_settings.
    _load_warnings: list[str] = PrivateAttr(default_factory=list)

    @field_validator("intercom_api_base_url", mode="before")
    @classmethod
    def _base_url(cls, value: object) -> object:
        if value is None or (isinstance(value, str) and not value.strip()):
            return US_BASE_URL
        if not isinstance(value, str):
            return value
        text = value.strip().rstrip("/")
        try:
            parts = urlsplit(text)
            has_credentials = parts.username is not None or parts.password is not None
            hostname = parts.hostname
        except ValueError:
            raise ValueError("must be an http(s) URL such as https://api.eu.intercom.io") from None
        if parts.scheme not in ("http", "https") or not hostname:
            raise ValueError("must be an http(s) URL such as https://api.eu.intercom.io")
        if has_credentials:
            # httpx would send them as Basic auth instead of the bearer token; the message
            # must not repeat them.
            raise ValueError(
                "must not contain a user name or password (the part before '@'); "
                "the access token is INTERCOM_ACCESS_TOKEN"
            )
        return text

    @field_validator(*SECRET_VARIABLES, mode="before")
    @classmethod
    def _secret(cls, value: object) -> object:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if not isinstance(value, str):
            return value
        if not value.strip():
            return None
        return clean_secret(value)

    @field_validator("intercom_workspace_id", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator(*TOKEN_LIST_VARIABLES, mode="before")
    @classmethod
    def _tokens(cls, value: object) -> object:
        return split_tokens(value)

    @field_validator("removal_reassign_admin_id", mode="before")
    @classmethod
    def _reassign_target(cls, value: object) -> object:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        text = str(value).strip()
        if not _ADMIN_ID.match(text):
            raise ValueError("must be a teammate id (digits), or 0 to leave unassigned")
        return text

    @field_validator("protected_admin_ids", mode="before")
    @classmethod
    def _protected(cls, value: object) -> object:
        ids = split_tokens(value)
        if isinstance(ids, list):
            for entry in ids:
                if not (isinstance(entry, str) and _ADMIN_ID.match(entry)):
                    raise ValueError("must be comma-separated teammate ids (digits)")
        return ids

    @field_validator(*TOKEN_LIST_VARIABLES, mode="after")
    @classmethod
    def _tokens_long_enough(cls, value: list[SecretStr]) -> list[SecretStr]:
        # The message counts characters and never shows a token.
        for index, token in enumerate(value, start=1):
            length = len(token.get_secret_value())
            if length < MIN_API_TOKEN_LENGTH:
                raise ValueError(
                    f"every token must be at least {MIN_API_TOKEN_LENGTH} characters "
                    f"(token {index} of {len(value)} has {length})"
                )
        return value

    @model_validator(mode="after")
    def _no_clear_text_token(self) -> Settings:
        if is_insecure_base_url(self.intercom_api_base_url) and not (
            self.intercom_allow_insecure_base_url
        ):
            raise ValueError(
                "INTERCOM_API_BASE_URL: plain http:// to a non-loopback host would send the "
                "access token in clear text; use https:// or set "
                "INTERCOM_ALLOW_INSECURE_BASE_URL=true"
            )
        interval = self.reconcile_interval_seconds
        if (
            0 < interval < MIN_RECONCILE_INTERVAL_SECONDS
            and not self.reconcile_allow_short_interval
        ):
            raise ValueError(
                f"RECONCILE_INTERVAL_SECONDS: must be 0 (no schedule) or at least "
                f"{MIN_RECONCILE_INTERVAL_SECONDS} seconds; webhooks keep the store current "
                "between baselines"
            )
        return self

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("intercom_api_version", mode="before")
    @classmethod
    def _version(cls, value: object) -> object:
        if value is None or (isinstance(value, str) and not value.strip()):
            return "2.14"
        if not isinstance(value, str):
            return value
        text = value.strip()
        if _API_VERSION.match(text) or text == PREVIEW_API_VERSION:
            return text
        hint = ""
        if text.lower() in ("preview", "unstable"):
            hint = " (Intercom spells it Preview, and refuses Unstable, its old name)"
        raise ValueError(f"must be N.N, such as 2.14 or 2.16, or Preview{hint}")

    @field_validator("database_url", mode="before")
    @classmethod
    def _database_url(cls, value: object) -> object:
        if value is None or (isinstance(value, str) and not value.strip()):
            return DEFAULT_DATABASE_URL
        if not isinstance(value, str):
            return value
        scheme = value.split(":", 1)[0].lower()
        if not (scheme.startswith("sqlite") or scheme.startswith("postgres")):
            raise ValueError("must be a sqlite:///… or postgresql://… URL")
        text = value.strip()
        if is_in_memory_sqlite(text):
            raise ValueError(
                "an in-memory SQLite database lives only as long as one connection, so "
                "migrations, syncs and reads would each see an empty store; use a file such "
                f"as {DEFAULT_DATABASE_URL}"
            )
        return text

    @property
    def base_url_is_known_region(self) -> bool:
        return self.intercom_api_base_url in REGION_BASE_URLS.values()

    @property
    def roles_supported(self) -> bool:
        """Intercom serves `admin.role` from API version 2.16 (and in Preview)."""
        return api_version_supports_roles(self.intercom_api_version)

    def secret_values(self) -> list[str]:
        """Every configured secret, for the log redactor."""
        values = [
            token.get_secret_value()
            for name in TOKEN_LIST_VARIABLES
            for token in getattr(self, name)
        ]
        for name in SECRET_VARIABLES:
            secret = getattr(self, name)
            if secret is not None:
                values.append(secret.get_secret_value())
        password = database_password(self.database_url)
        if password:
            # A driver's error shows it decoded; the URL carries it percent-encoded.
            values.extend({password, unquote(password)})
        return [v for v in values if v]


def startup_warnings(settings: Settings) -> list[str]:
    """Start-up warnings about the configuration, one line each, no secret values."""
    warnings: list[str] = []
    if not settings.read_api_tokens:
        warnings.append("READ_API_TOKENS is empty: every /api/v1 request will be refused (401)")
    if not settings.operator_api_tokens:
        warnings.append(
            "OPERATOR_API_TOKENS is empty: /resync, /sync-runs and /webhook-events "
            "will refuse every request (401)"
        )
    read = {t.get_secret_value() for t in settings.read_api_tokens}
    if any(t.get_secret_value() in read for t in settings.operator_api_tokens):
        warnings.append(
            "a token is listed in both READ_API_TOKENS and OPERATOR_API_TOKENS: "
            "give C1 and operators different tokens"
        )
    operator = {t.get_secret_value() for t in settings.operator_api_tokens}
    if any(t.get_secret_value() in operator for t in settings.provisioning_api_tokens):
        warnings.append(
            "a token is listed in both OPERATOR_API_TOKENS and PROVISIONING_API_TOKENS: "
            "give operators and C1's provisioning different tokens"
        )
    if settings.intercom_access_token is None:
        warnings.append("INTERCOM_ACCESS_TOKEN is not set: syncs will fail until it is")
    if settings.intercom_client_secret is None:
        warnings.append("INTERCOM_CLIENT_SECRET is not set: the webhook endpoint answers 503")
    # A loopback host is a deliberate local setup (the bundled simulator, a local proxy),
    # never a mistyped Intercom host.
    base_host = urlsplit(settings.intercom_api_base_url).hostname or ""
    if not settings.base_url_is_known_region and not is_loopback_host(base_host):
        warnings.append(
            f"INTERCOM_API_BASE_URL is {settings.intercom_api_base_url}, "
            "not one of Intercom's regional hosts"
        )
    if is_insecure_base_url(settings.intercom_api_base_url):
        warnings.append(
            "INTERCOM_API_BASE_URL is plain http:// (allowed by "
            "INTERCOM_ALLOW_INSECURE_BASE_URL): the access token travels in clear text"
        )
    if 0 < settings.reconcile_interval_seconds < MIN_RECONCILE_INTERVAL_SECONDS:
        warnings.append(
            f"RECONCILE_INTERVAL_SECONDS is {settings.reconcile_interval_seconds:g} (allowed by "
            "RECONCILE_ALLOW_SHORT_INTERVAL): every period is a full baseline against Intercom"
        )
    warnings.extend(settings._load_warnings)
    return warnings


def api_version_supports_roles(version: str) -> bool:
    if version.lower() == "preview":
        return True
    try:
        major, minor = (int(part) for part in version.split(".", 1))
    except ValueError:
        return False
    return (major, minor) >= (2, 16)


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning validation failures into a one-line error naming the variable."""
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]).upper()
            message = error["msg"].removeprefix("Value error, ")
            # A check across variables (the model validator) names its variable itself.
            problems.append(f"{name}: {message}" if name else message)
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
    env_file = overrides.get("_env_file", Settings.model_config.get("env_file"))
    settings._load_warnings = unknown_variable_warnings(
        configured_names(env_file), Settings.model_fields
    )
    return settings


@lru_cache
def get_settings() -> Settings:
    return load_settings()
