"""Trust at the edges of configuration (issue 17.1–17.3, 17.8 version part, 17.11 config part):
secrets stripped and checked at load, no credentials in the base URL, a version Intercom refuses
read as a configuration error, no in-memory SQLite, a reconcile floor, warnings for variables
that look like ours, and secrets scrubbed (in their escaped forms too) from every sink."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from app.cli import main
from app.intercom.client import IntercomClient
from app.intercom.errors import IntercomConfigError
from app.intercom.retries import RetryPolicy
from app.observability.logs import REDACTOR, JsonFormatter, configure_logging
from app.settings import ConfigError, load_settings, startup_warnings
from app.simulator import SimulatorServer, build_notification
from app.simulator.webhooks import encode_notification
from app.store import sync_runs
from app.store.engine import Database
from harness.service import (
    OPERATOR_TOKEN,
    READ_TOKEN,
    SIM_SECRET,
    SIM_TOKEN,
    ServiceProcess,
    ServiceServer,
    service_env,
    signed_headers,
)
from harness.waiting import wait_for

INTERCOM_SYNC = Path(sys.executable).parent / "intercom-sync"
FAST_RETRY = RetryPolicy(max_attempts=3, backoff_initial_seconds=0.01, backoff_max_seconds=0.05)
SECRETS = {
    "INTERCOM_ACCESS_TOKEN": SIM_TOKEN,
    "INTERCOM_CLIENT_SECRET": SIM_SECRET,
    "READ_API_TOKENS": READ_TOKEN,
    "OPERATOR_API_TOKENS": OPERATOR_TOKEN,
}


def configured(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def secret_of(variable: str, settings: Any) -> str:
    value = getattr(settings, variable.lower())
    if isinstance(value, list):
        [value] = value
    secret: str = value.get_secret_value()
    return secret


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(INTERCOM_SYNC), *args],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


# ---- 17.1 / 17.2: secrets are stripped, and refused with anything odd inside ---------------


@pytest.mark.parametrize("variable", sorted(SECRETS))
@pytest.mark.parametrize("around", ["\n", "\r\n", " ", "\t", "  \n\n"])
def test_surrounding_whitespace_is_stripped_from_every_secret(
    monkeypatch: pytest.MonkeyPatch, variable: str, around: str
) -> None:
    configured(monkeypatch, **{variable: f"{around}{SECRETS[variable]}{around}"})
    assert secret_of(variable, load_settings(_env_file=None)) == SECRETS[variable]


@pytest.mark.parametrize("variable", sorted(SECRETS))
@pytest.mark.parametrize("inside", [" ", "\t", "\n", "\x01", "\x1b", "\x7f", "é", "\u00a0"])
def test_a_secret_with_inner_whitespace_control_or_non_ascii_is_a_startup_error(
    monkeypatch: pytest.MonkeyPatch, variable: str, inside: str
) -> None:
    secret = SECRETS[variable]
    configured(monkeypatch, **{variable: f"{secret[:9]}{inside}{secret[9:]}"})
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)
    message = str(caught.value)
    assert variable in message
    assert "\n" not in message
    assert secret[:9] not in message
    assert secret[9:] not in message


def test_the_issue_repro_token_with_a_newline_syncs(
    database_url: str, sim: SimulatorServer, tmp_path: Path
) -> None:
    """`echo tok > file` gives a trailing newline: it is ignored, the sync succeeds."""
    env = service_env(database_url, sim, intercom_access_token=SIM_TOKEN + "\n")
    result = run_cli(["sync"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert SIM_TOKEN not in result.stdout + result.stderr
    assert "Bearer" not in result.stdout + result.stderr


# ---- 17.3: no user or password in the base URL ----------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://bob:HunterPw99@127.0.0.1:8900",
        "https://bob:HunterPw99@api.intercom.io",
        "https://:HunterPw99@api.intercom.io",
        "https://bob@api.intercom.io",
    ],
)
def test_a_base_url_with_credentials_is_a_startup_error_without_the_password(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    configured(monkeypatch, INTERCOM_API_BASE_URL=url)
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)
    message = str(caught.value)
    assert "INTERCOM_API_BASE_URL" in message
    assert "HunterPw99" not in message


def test_sync_refuses_a_base_url_with_a_password_in_one_line(
    database_url: str, tmp_path: Path
) -> None:
    env = service_env(
        database_url,
        None,
        INTERCOM_API_BASE_URL="http://bob:HunterPw99@host:8900",
        INTERCOM_ACCESS_TOKEN=SIM_TOKEN,
    )
    result = run_cli(["sync"], env, tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "INTERCOM_API_BASE_URL" in line
    assert "HunterPw99" not in result.stdout + result.stderr


# ---- 17.8: the API version, as Intercom spells it -------------------------------------------


@pytest.mark.parametrize("version", ["1.0", "2.14", "2.16", "2.17", "Preview"])
def test_the_simulator_answers_versions_intercom_knows(sim: SimulatorServer, version: str) -> None:
    response = httpx.get(
        f"{sim.url}/me", headers={**sim.auth_headers, "Intercom-Version": version}, timeout=10
    )
    assert response.status_code == 200


@pytest.mark.parametrize("version", ["Unstable", "preview", "9.9", "2.140", "latest"])
def test_the_simulator_refuses_a_version_it_does_not_know(
    sim: SimulatorServer, version: str
) -> None:
    response = httpx.get(
        f"{sim.url}/admins", headers={**sim.auth_headers, "Intercom-Version": version}, timeout=10
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "intercom_version_invalid"


def test_intercom_version_invalid_is_a_config_error_not_retried(sim: SimulatorServer) -> None:
    client = IntercomClient(
        base_url=sim.url, access_token=SIM_TOKEN, api_version="9.9", retry=FAST_RETRY
    )

    async def fetch() -> None:
        async with client:
            await client.list_admins()

    with pytest.raises(IntercomConfigError) as caught:
        asyncio.run(fetch())
    assert caught.value.code == "config_invalid"
    assert "INTERCOM_API_VERSION" in caught.value.message
    assert len(sim.requests("/admins")) == 1


def test_a_version_intercom_refuses_fails_the_run_as_config_invalid_in_readyz(
    database_url: str, sim: SimulatorServer
) -> None:
    from harness.service import make_settings

    service = ServiceServer(make_settings(database_url, sim, intercom_api_version="9.9")).start()
    try:
        with service.client(OPERATOR_TOKEN) as ops:
            run = wait_for(
                lambda: next(
                    (r for r in ops.get("/sync-runs").json()["items"] if r["finished_at"]), None
                ),
                timeout=30,
                what="the start-up run to finish",
            )
        assert run["status"] == "failed"
        assert run["error"]["code"] == "config_invalid"
        assert "INTERCOM_API_VERSION" in run["error"]["message"]
        assert len(sim.requests("/me")) == 1  # not retried
        ready = httpx.get(f"{service.url}/readyz", timeout=10).json()
        assert "config_invalid" in ready["problems"]
        assert "sync_failing" not in ready["problems"]
    finally:
        service.stop()


# ---- a malformed header value: a configuration error, never "connection failed" ------------


def test_a_token_http_cannot_carry_is_a_config_error_before_any_request(
    sim: SimulatorServer,
) -> None:
    with pytest.raises(IntercomConfigError) as caught:
        IntercomClient(base_url=sim.url, access_token=SIM_TOKEN + "\n", api_version="2.14")
    assert "INTERCOM_ACCESS_TOKEN" in caught.value.message
    assert SIM_TOKEN not in caught.value.message
    assert sim.requests() == []


def test_a_header_h11_refuses_is_a_config_error_not_retried_and_not_quoted(
    sim: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A trailing space passes the character check but not HTTP's header grammar (h11).
    client = IntercomClient(
        base_url=sim.url, access_token=SIM_TOKEN + " ", api_version="2.14", retry=FAST_RETRY
    )

    async def fetch() -> None:
        async with client:
            await client.get_workspace()

    with caplog.at_level(logging.WARNING), pytest.raises(IntercomConfigError) as caught:
        asyncio.run(fetch())
    assert caught.value.code == "config_invalid"
    assert "INTERCOM_ACCESS_TOKEN" in caught.value.message
    assert SIM_TOKEN not in caught.value.message
    assert "connection" not in caught.value.message
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]
    assert sim.requests() == []


# ---- the redactor: every sink, every spelling ----------------------------------------------

# Printable ASCII, so settings accept it; `"`, `\`, `/`, `+` and `%` change under escaping.
ODD_TOKEN = 'tok"With\\Odd/Chars+And%25-0123456789'


@pytest.mark.parametrize(
    "spelling",
    [
        ODD_TOKEN,
        repr(ODD_TOKEN),
        repr(f"Bearer {ODD_TOKEN}\n".encode()),
        quote(ODD_TOKEN, safe=""),
        orjson.dumps(ODD_TOKEN).decode(),
    ],
)
def test_a_json_log_line_holds_no_spelling_of_a_secret(spelling: str) -> None:
    REDACTOR.register([ODD_TOKEN])
    try:
        record = logging.LogRecord(
            "app.test", logging.WARNING, __file__, 1, "failed: %s", (spelling,), None
        )
        line = JsonFormatter().format(record)
    finally:
        REDACTOR.register([])
    assert "[redacted]" in line
    for fragment in ("Odd/Chars", "Odd%2FChars", "Odd\\\\/Chars", "0123456789"):
        assert fragment not in line, line


def test_the_run_record_message_is_scrubbed_at_the_store(store: Database) -> None:
    REDACTOR.register([SIM_TOKEN])
    try:
        with store.writing() as session:
            run, _created = sync_runs.enqueue_run(
                session, trigger=sync_runs.RunTrigger.CLI, force=False, owner="test"
            )
        with store.writing() as session:
            view = sync_runs.finish_run(
                session,
                run.id,
                status=sync_runs.RunStatus.FAILED,
                error_code="internal_error",
                error_message=f"LocalProtocolError: Illegal header value b'Bearer {SIM_TOKEN}\\n'",
            )
    finally:
        REDACTOR.register([])
    assert view.error_message is not None
    assert SIM_TOKEN not in view.error_message
    with store.reading() as session:
        stored = sync_runs.get_run(session, run.id)
    assert stored is not None
    assert SIM_TOKEN not in (stored.error_message or "")


def test_an_intercom_error_quoting_the_token_reaches_no_sink(
    database_url: str, sim: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Intercom's answer itself carries the token (an error code echoing it): the CLI output
    and the run record both come out without it."""
    sim.add_fault(path="/me", status=400, error_code=f"bad_{SIM_TOKEN}", times=10)
    for name, value in service_env(database_url, sim).items():
        monkeypatch.setenv(name, value)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["sync"])
    assert code == 1
    assert "bad_[redacted]" in err.getvalue()
    assert SIM_TOKEN not in out.getvalue() + err.getvalue()
    from app.store.engine import create_database

    db = create_database(database_url)
    try:
        with db.reading() as session:
            [run] = sync_runs.list_runs(session, limit=5)
    finally:
        db.dispose()
    assert run.error_message is not None
    assert SIM_TOKEN not in run.error_message


def test_the_database_password_is_a_secret_in_both_spellings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configured(monkeypatch, DATABASE_URL="postgresql://sync:Pa%40ssw0rd-db@db.internal/sync")
    values = load_settings(_env_file=None).secret_values()
    assert "Pa%40ssw0rd-db" in values
    assert "Pa@ssw0rd-db" in values


# ---- 17.11: in-memory SQLite, the reconcile floor, look-alike variables ---------------------


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite+pysqlite:///:memory:",
        "sqlite:///file:memdb1?mode=memory&cache=shared&uri=true",
        "sqlite:///file::memory:?cache=shared&uri=true",
    ],
)
def test_in_memory_sqlite_is_a_startup_error(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    configured(monkeypatch, DATABASE_URL=url)
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        load_settings(_env_file=None)


@pytest.mark.parametrize("command", [["migrate"], ["sync"], ["serve", "--port", "0"]])
def test_every_command_refuses_in_memory_sqlite_in_one_line(
    tmp_path: Path, command: list[str]
) -> None:
    env = service_env("sqlite://", None)
    result = run_cli(command, env, tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "DATABASE_URL" in line
    assert "in-memory" in line
    assert "Traceback" not in result.stdout + result.stderr
    assert "migrations applied" not in result.stdout


@pytest.mark.parametrize("interval", ["0.5", "1", "59.9"])
def test_a_reconcile_interval_under_a_minute_is_refused(
    monkeypatch: pytest.MonkeyPatch, interval: str
) -> None:
    configured(monkeypatch, RECONCILE_INTERVAL_SECONDS=interval)
    with pytest.raises(ConfigError, match="RECONCILE_INTERVAL_SECONDS"):
        load_settings(_env_file=None)


@pytest.mark.parametrize("interval", ["0", "60", "900"])
def test_zero_or_a_minute_or_more_is_accepted(
    monkeypatch: pytest.MonkeyPatch, interval: str
) -> None:
    configured(monkeypatch, RECONCILE_INTERVAL_SECONDS=interval)
    assert load_settings(_env_file=None).reconcile_interval_seconds == float(interval)


def test_a_short_interval_needs_the_explicit_flag_and_is_warned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configured(monkeypatch, RECONCILE_INTERVAL_SECONDS="1", RECONCILE_ALLOW_SHORT_INTERVAL="true")
    settings = load_settings(_env_file=None)
    assert settings.reconcile_interval_seconds == 1
    assert any("RECONCILE_ALLOW_SHORT_INTERVAL" in w for w in startup_warnings(settings))


@pytest.mark.parametrize(
    ("name", "intended"),
    [
        ("READ_API_TOKEN", "READ_API_TOKENS"),
        ("MAX_REMOVAL_FRACTON", "MAX_REMOVAL_FRACTION"),
        ("DATABASE_URI", "DATABASE_URL"),
        ("INTERCOM_ACCES_TOKEN", "INTERCOM_ACCESS_TOKEN"),
        ("operator_api_token", "OPERATOR_API_TOKENS"),
    ],
)
def test_a_misspelt_variable_is_warned_naming_the_intended_one(
    monkeypatch: pytest.MonkeyPatch, name: str, intended: str
) -> None:
    configured(monkeypatch, **{name: "x"})
    warnings = startup_warnings(load_settings(_env_file=None))
    [warning] = [w for w in warnings if w.startswith(f"{name} ")]
    assert f"did you mean {intended}?" in warning


def test_an_unknown_name_with_our_prefix_is_warned_but_service_links_are_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configured(
        monkeypatch,
        INTERCOM_REGION="eu",
        INTERCOM_SYNC_SERVICE_HOST="10.0.0.1",
        INTERCOM_SYNC_PORT_8000_TCP_ADDR="10.0.0.1",
        HOSTNAME="pod-1",
    )
    warnings = startup_warnings(load_settings(_env_file=None))
    assert [w for w in warnings if "INTERCOM_REGION" in w]
    assert not [w for w in warnings if "INTERCOM_SYNC_" in w or "HOSTNAME" in w]


def test_a_misspelling_in_the_env_file_is_warned(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("READ_API_TOKEN=abcdefghijklmnopqrstuvwxyz\nLOG_LEVEL=info\n")
    warnings = startup_warnings(load_settings(_env_file=str(env_file)))
    assert any("READ_API_TOKEN " in w and "READ_API_TOKENS" in w for w in warnings)
    assert not any("abcdefghijklmnop" in w for w in warnings)


def test_a_client_secret_with_a_newline_verifies_genuine_webhooks(
    database_url: str, sim: SimulatorServer
) -> None:
    from harness.service import make_settings

    settings_now = make_settings(database_url, sim, intercom_client_secret=SIM_SECRET + "\n")
    service = ServiceServer(settings_now).start()
    try:
        service.wait_ready()
        body = encode_notification(build_notification("ping", {}, app_id=sim.workspace.id_code))
        response = httpx.post(
            f"{service.url}/webhooks/intercom",
            content=body,
            headers=signed_headers(body, SIM_SECRET),
            timeout=10,
        )
    finally:
        service.stop()
    assert response.status_code == 200, response.text


def test_sync_prints_and_serve_logs_the_misspelling(
    database_url: str, sim: SimulatorServer, tmp_path: Path
) -> None:
    """Also the issue's repro: `serve` with a token ending in a newline syncs, and its log
    holds no trace of the token."""
    env = service_env(
        database_url, sim, MAX_REMOVAL_FRACTON="0.1", INTERCOM_ACCESS_TOKEN=SIM_TOKEN + "\n"
    )
    result = run_cli(["sync"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert any(
        line.startswith("warning: MAX_REMOVAL_FRACTON") and "MAX_REMOVAL_FRACTION" in line
        for line in result.stderr.splitlines()
    ), result.stderr

    log = tmp_path / "serve.log"
    service = ServiceProcess(env, log_path=log).start()
    try:
        wait_for(
            lambda: httpx.get(f"{service.url}/readyz", timeout=5).status_code == 200,
            timeout=60,
            what="the start-up baseline",
        )
    finally:
        service.terminate()
    text = log.read_text()
    assert SIM_TOKEN not in text
    assert "Illegal header" not in text
    entries = [orjson.loads(x) for x in text.splitlines() if x.startswith("{")]
    assert any(
        e["level"] == "warning" and "did you mean MAX_REMOVAL_FRACTION?" in e["message"]
        for e in entries
    )


# ---- property (c): whatever surrounds or splits a secret ------------------------------------

# NUL aside: no environment variable can hold it.
NOISE = st.text(alphabet=" \t\n\r\x0b\x0c\x01\x1b\x7f\x85\u00a0\u2028\u3000é", max_size=3)


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def leaked(secret: str, text: str) -> bool:
    """Whether the secret, or a long piece of it either side of an insertion, shows."""
    return secret in text or any(secret[:n] in text or secret[n:] in text for n in (10, 16))


def check_working_service(variable: str, sim: SimulatorServer, logs: io.StringIO) -> None:
    settings_now = load_settings(_env_file=None)
    service = ServiceServer(settings_now).start()
    try:
        ready = service.wait_ready()
        assert "auth_failed" not in ready["problems"]
        if variable == "INTERCOM_CLIENT_SECRET":
            body = encode_notification(build_notification("ping", {}, app_id=sim.workspace.id_code))
            response = httpx.post(
                f"{service.url}/webhooks/intercom",
                content=body,
                headers=signed_headers(body, SIM_SECRET),
                timeout=10,
            )
            assert response.status_code == 200, response.text
        with service.client(READ_TOKEN) as reader:
            assert reader.get("/api/v1/snapshot").status_code == 200
        with service.client(OPERATOR_TOKEN) as ops:
            runs = ops.get("/sync-runs")
            assert runs.status_code == 200
            assert not any(leaked(s, runs.text) for s in SECRETS.values())
    finally:
        service.stop()
    assert not any(leaked(s, logs.getvalue()) for s in SECRETS.values())


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    variable=st.sampled_from(sorted(SECRETS)),
    before=NOISE,
    after=NOISE,
    inside=st.one_of(st.just(""), NOISE),
    at=st.integers(min_value=1, max_value=15),
)
def test_property_a_decorated_secret_is_a_one_line_error_or_a_working_service(
    database_url: str,
    sim: SimulatorServer,
    tmp_path: Path,
    variable: str,
    before: str,
    after: str,
    inside: str,
    at: int,
) -> None:
    secret = SECRETS[variable]
    value = before + secret[:at] + inside + secret[at:] + after
    env = service_env(database_url, sim, **{variable: value})
    # The service then logs at debug level, so every line it can write is checked.
    env["LOG_LEVEL"] = "debug"
    out, err, logs = io.StringIO(), io.StringIO(), io.StringIO()
    with environment(env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code: object = main(["sync"])
        except SystemExit as exited:
            code = exited.code
    printed = out.getvalue() + err.getvalue()
    works = value.strip() == secret
    event("works" if works else "refused")
    if works:
        assert code == 0, printed
        assert "sync succeeded" in printed
    else:
        assert code == 2, printed
        [line] = err.getvalue().strip().splitlines()
        assert variable in line
        assert out.getvalue() == ""
    assert not leaked(secret, printed)
    if works:
        with environment(env), contextlib.redirect_stderr(logs):
            check_working_service(variable, sim, logs)
    # Leave the process's logging as the other tests expect it.
    configure_logging("info", "json", [])
