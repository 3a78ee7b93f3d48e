"""Configuration from the environment (and `.env`), under exactly the names of the product spec."""

from __future__ import annotations

import ipaddress
import logging
import re
from functools import lru_cache
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

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
_NAMED_API_VERSIONS = ("unstable", "preview")


class ConfigError(Exception):
    """A variable is malformed; the message names it and never echoes secret values."""


def _split_tokens(value: object) -> object:
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


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
    reconcile_interval_seconds: float = Field(default=900, ge=0)
    sync_on_startup: bool = True
    max_removal_fraction: float = Field(default=0.25, ge=0, le=1)
    change_log_retention_days: float = Field(default=30, gt=0)
    webhook_retention_days: float = Field(default=7, ge=7)
    webhook_refresh_debounce_seconds: float = Field(default=2.0, ge=0)
    intercom_timeout_seconds: float = Field(default=30.0, gt=0)
    intercom_max_attempts: int = Field(default=5, ge=1)
    intercom_max_rate_limit_wait_seconds: float = Field(default=60.0, ge=0)
    intercom_backoff_initial_seconds: float = Field(default=0.8, ge=0)
    # Spec §11: usage evidence from Intercom's admin activity log.
    activity_log_enabled: bool = True
    activity_log_backfill_days: int = Field(default=90, ge=1, le=730)
    access_event_retention_days: float = Field(default=400, gt=0)
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    log_format: Literal["json", "console"] = "json"

    @field_validator("intercom_api_base_url", mode="before")
    @classmethod
    def _base_url(cls, value: object) -> object:
        if value is None or (isinstance(value, str) and not value.strip()):
            return US_BASE_URL
        if not isinstance(value, str):
            return value
        text = value.strip().rstrip("/")
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL such as https://api.eu.intercom.io")
        return text

    @field_validator("intercom_access_token", "intercom_client_secret", mode="before")
    @classmethod
    def _blank_secret_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("intercom_workspace_id", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator("read_api_tokens", "operator_api_tokens", mode="before")
    @classmethod
    def _tokens(cls, value: object) -> object:
        return _split_tokens(value)

    @field_validator("read_api_tokens", "operator_api_tokens", mode="after")
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
        if not (_API_VERSION.match(text) or text.lower() in _NAMED_API_VERSIONS):
            raise ValueError("must be a version such as 2.14 or 2.16, or Unstable/Preview")
        return text

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
        return value.strip()

    @property
    def base_url_is_known_region(self) -> bool:
        return self.intercom_api_base_url in REGION_BASE_URLS.values()

    @property
    def roles_supported(self) -> bool:
        """Intercom serves `admin.role` from API version 2.16 (and in Preview)."""
        return api_version_supports_roles(self.intercom_api_version)

    def secret_values(self) -> list[str]:
        """Every configured secret, for the log redactor."""
        values = [t.get_secret_value() for t in (*self.read_api_tokens, *self.operator_api_tokens)]
        for secret in (self.intercom_access_token, self.intercom_client_secret):
            if secret is not None:
                values.append(secret.get_secret_value())
        password = _database_password(self.database_url)
        if password:
            values.append(password)
        return [v for v in values if v]


def is_loopback_host(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_insecure_base_url(url: str) -> bool:
    """Plain http:// to a host other than loopback: the access token would travel in clear."""
    parts = urlsplit(url)
    return parts.scheme == "http" and not is_loopback_host(parts.hostname or "")


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
    if settings.intercom_access_token is None:
        warnings.append("INTERCOM_ACCESS_TOKEN is not set: syncs will fail until it is")
    if settings.intercom_client_secret is None:
        warnings.append("INTERCOM_CLIENT_SECRET is not set: the webhook endpoint answers 503")
    if not settings.base_url_is_known_region:
        warnings.append(
            f"INTERCOM_API_BASE_URL is {settings.intercom_api_base_url}, "
            "not one of Intercom's regional hosts"
        )
    if is_insecure_base_url(settings.intercom_api_base_url):
        warnings.append(
            "INTERCOM_API_BASE_URL is plain http:// (allowed by "
            "INTERCOM_ALLOW_INSECURE_BASE_URL): the access token travels in clear text"
        )
    return warnings


def _database_password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def api_version_supports_roles(version: str) -> bool:
    if version.lower() in ("preview", "unstable"):
        return True
    try:
        major, minor = (int(part) for part in version.split(".", 1))
    except ValueError:
        return False
    return (major, minor) >= (2, 16)


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning validation failures into a one-line error naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]).upper()
            message = error["msg"].removeprefix("Value error, ")
            # A check across variables (the model validator) names its variable itself.
            problems.append(f"{name}: {message}" if name else message)
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


@lru_cache
def get_settings() -> Settings:
    return load_settings()
