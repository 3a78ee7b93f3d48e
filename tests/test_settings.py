"""Settings: the spec's variable names, defaults, and clear errors for malformed values."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.settings import US_BASE_URL, ConfigError, Settings, load_settings, startup_warnings

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
    monkeypatch.setenv(
        "READ_API_TOKENS", " tok-alpha-0123456789, tok-beta-0123456789 ,,tok-gamma-0123456789 "
    )
    settings = load_settings(_env_file=None)
    assert [t.get_secret_value() for t in settings.read_api_tokens] == [
        "tok-alpha-0123456789",
        "tok-beta-0123456789",
        "tok-gamma-0123456789",
    ]
    assert "tok-alpha-0123456789" not in repr(settings)


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


# ---- token and host hygiene (issue 11, point 4) ---------------------------------------------

LONG_A = "aaaa-long-token-0123456789"
LONG_B = "bbbb-long-token-0123456789"


@pytest.mark.parametrize("variable", ["READ_API_TOKENS", "OPERATOR_API_TOKENS"])
def test_a_short_api_token_is_refused_naming_the_variable_not_the_value(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, f"{LONG_A},short-tok,{LONG_B}")
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)
    message = str(caught.value)
    assert variable in message
    assert "token 2 of 3 has 9" in message
    assert "\n" not in message
    for value in ("short-tok", LONG_A, LONG_B):
        assert value not in message


def test_sixteen_characters_is_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("READ_API_TOKENS", "x" * 16)
    assert len(load_settings(_env_file=None).read_api_tokens) == 1


def test_a_token_in_both_lists_is_warned_about_without_its_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("READ_API_TOKENS", f"{LONG_A},{LONG_B}")
    monkeypatch.setenv("OPERATOR_API_TOKENS", LONG_B)
    warnings = startup_warnings(load_settings(_env_file=None))
    both = [w for w in warnings if "both" in w]
    assert len(both) == 1
    assert "READ_API_TOKENS" in both[0]
    assert "OPERATOR_API_TOKENS" in both[0]
    assert all(LONG_A not in w and LONG_B not in w for w in warnings)

    monkeypatch.setenv("OPERATOR_API_TOKENS", "cccc-long-token-0123456789")
    assert not [w for w in startup_warnings(load_settings(_env_file=None)) if "both" in w]


@pytest.mark.parametrize(
    "url", ["http://api.intercom.io", "http://10.0.0.5:8080", "http://127.example.com"]
)
def test_plain_http_to_a_remote_host_is_refused(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("INTERCOM_API_BASE_URL", url)
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)
    message = str(caught.value)
    assert "INTERCOM_API_BASE_URL" in message
    assert "INTERCOM_ALLOW_INSECURE_BASE_URL" in message
    assert "CONFIGURATION" not in message


def test_plain_http_to_a_remote_host_is_allowed_with_the_flag_and_warned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INTERCOM_API_BASE_URL", "http://proxy.internal:8080")
    monkeypatch.setenv("INTERCOM_ALLOW_INSECURE_BASE_URL", "true")
    settings = load_settings(_env_file=None)
    assert settings.intercom_api_base_url == "http://proxy.internal:8080"
    assert any("clear text" in w for w in startup_warnings(settings))


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8900", "http://127.8.9.10", "http://localhost:8900", "http://[::1]:8900"],
)
def test_plain_http_to_loopback_is_fine(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("INTERCOM_API_BASE_URL", url)
    settings = load_settings(_env_file=None)
    assert not any("clear text" in w for w in startup_warnings(settings))


def test_https_anywhere_is_fine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERCOM_API_BASE_URL", "https://proxy.internal:8443")
    settings = load_settings(_env_file=None)
    assert not any("clear text" in w for w in startup_warnings(settings))


@pytest.mark.parametrize(
    "version", ["2", "v2.14", "latest", "2.14.1", "2.x", "Unstable", "unstable", "preview"]
)
def test_a_malformed_api_version_is_refused(monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    monkeypatch.setenv("INTERCOM_API_VERSION", version)
    with pytest.raises(ConfigError, match="INTERCOM_API_VERSION"):
        load_settings(_env_file=None)


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("2.16", "2.16"),
        (" 2.14 ", "2.14"),
        ("Preview", "Preview"),
        ("", "2.14"),
    ],
)
def test_well_formed_api_versions_are_accepted(
    monkeypatch: pytest.MonkeyPatch, version: str, expected: str
) -> None:
    monkeypatch.setenv("INTERCOM_API_VERSION", version)
    assert load_settings(_env_file=None).intercom_api_version == expected
