"""Settings: the spec's variable names, defaults, and clear errors for malformed values."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.settings import US_BASE_URL, ConfigError, Settings, load_settings

ENV_EXAMPLE = Path(__file__).resolve().parents[1] / ".env.example"


def _example_variables() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            values[match.group(1)] = match.group(2)
    return values


def test_env_example_lists_every_setting_and_nothing_else() -> None:
    listed = set(_example_variables())
    fields = {name.upper() for name in Settings.model_fields}
    assert listed == fields


def test_env_example_loads_as_valid_settings() -> None:
    settings = load_settings(_env_file=str(ENV_EXAMPLE))
    assert settings.intercom_api_base_url == US_BASE_URL
    assert settings.database_url == "sqlite:///./data/intercom-sync.db"
    assert settings.reconcile_interval_seconds == 900
    assert settings.read_api_tokens == []


def test_blank_base_url_means_us(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERCOM_API_BASE_URL", "")
    assert load_settings(_env_file=None).intercom_api_base_url == "https://api.intercom.io"


@pytest.mark.parametrize("url", ["https://api.eu.intercom.io", "https://api.au.intercom.io/"])
def test_regional_base_urls(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("INTERCOM_API_BASE_URL", url)
    settings = load_settings(_env_file=None)
    assert settings.intercom_api_base_url == url.rstrip("/")
    assert settings.base_url_is_known_region


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("INTERCOM_API_BASE_URL", "api.intercom.io"),
        ("INTERCOM_API_BASE_URL", "ftp://api.intercom.io"),
        ("DATABASE_URL", "mysql://x@y/z"),
        ("RECONCILE_INTERVAL_SECONDS", "soon"),
        ("MAX_REMOVAL_FRACTION", "2"),
        ("SYNC_ON_STARTUP", "perhaps"),
        ("LOG_FORMAT", "xml"),
    ],
)
def test_malformed_variable_is_named(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable):
        load_settings(_env_file=None)


def test_secret_values_are_not_echoed_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERCOM_ACCESS_TOKEN", "tok_supersecret_value")
    monkeypatch.setenv("RECONCILE_INTERVAL_SECONDS", "never")
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)
    assert "tok_supersecret_value" not in str(caught.value)


def test_token_lists_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("READ_API_TOKENS", " tok-alpha, tok-beta ,,tok-gamma ")
    settings = load_settings(_env_file=None)
    assert [t.get_secret_value() for t in settings.read_api_tokens] == [
        "tok-alpha",
        "tok-beta",
        "tok-gamma",
    ]
    assert "tok-alpha" not in repr(settings)


def test_roles_follow_the_api_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERCOM_API_VERSION", "2.14")
    assert not load_settings(_env_file=None).roles_supported
    monkeypatch.setenv("INTERCOM_API_VERSION", "2.16")
    assert load_settings(_env_file=None).roles_supported


def test_cli_reports_a_malformed_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli import main

    monkeypatch.setenv("INTERCOM_API_BASE_URL", "not a url")
    with pytest.raises(SystemExit) as exited:
        main(["migrate"])
    assert exited.value.code == 2
    assert "INTERCOM_API_BASE_URL" in capsys.readouterr().err
