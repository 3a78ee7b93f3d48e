"""Observability: `/metrics` carries every family of with sensible values; logs are
one JSON object per line with the request id on request lines and the sync run id on every
line a run emits; and no configured secret ever shows in a log line, an error body, `/readyz`
or `/metrics`, whatever fails."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sqlalchemy.engine import make_url

from app.intercom.signature import sign_body
from app.observability.logs import (
    REDACTOR,
    ConsoleFormatter,
    ContextFilter,
    JsonFormatter,
    request_id_var,
    run_id_var,
)
from app.simulator import SimulatorServer
from app.simulator.webhooks import admin_webhook_item, build_notification, encode_notification
from harness.databases import database_server
from harness.service import (
    OPERATOR_TOKEN,
    READ_TOKEN,
    ROOT,
    SIM_SECRET,
    SIM_TOKEN,
    ServiceProcess,
    ServiceServer,
    service_env,
    signed_headers,
    snapshot,
)
from harness.waiting import free_port, wait_for

Families = dict[str, list[Sample]]


def scrape(url: str) -> tuple[Families, str]:
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {
        family.name: list(family.samples)
        for family in text_string_to_metric_families(response.text)
    }
    return families, response.text


def value(families: Families, sample: str, **labels: str) -> float:
    """The sum of the samples called `sample` whose labels include `labels` (0 if none)."""
    return sum(
        s.value
        for samples in families.values()
        for s in samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    )


def run_to_finish(url: str, run: dict[str, Any]) -> dict[str, Any]:
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}, timeout=10
    ) as client:

        def finished() -> dict[str, Any] | None:
            current: dict[str, Any] = client.get(f"/sync-runs/{run['id']}").json()
            return current if current["finished_at"] else None

        return wait_for(finished, timeout=60, interval=0.1, what=f"sync run {run['id']}")


def resync(url: str) -> dict[str, Any]:
    response = httpx.post(
        f"{url}/resync", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}, timeout=10
    )
    assert response.status_code == 202, response.text
    return run_to_finish(url, response.json())


def webhook_body(sim: SimulatorServer, topic: str = "admin.away_mode_updated") -> bytes:
    admin = sorted(sim.workspace.admins.values(), key=lambda a: a.id)[1]
    envelope = build_notification(
        topic,
        admin_webhook_item(admin),
        app_id=sim.workspace.id_code,
        # Now: one from past the 5 minutes a clock may be ahead is refused.
        created_at=int(time.time()),
    )
    return encode_notification(envelope)


class TestMetrics:
    def test_before_the_first_sync_the_store_gauges_say_so(
        self, start_service: Callable[..., ServiceServer]
    ) -> None:
        service = start_service(wait_ready=False, sync_on_startup=False)
        families, _ = scrape(service.url)
        assert value(families, "intercom_sync_store_up") == 1
        assert value(families, "intercom_sync_store_version") == 0
        assert value(families, "intercom_sync_inbox_backlog") == 0
        # Declared, but no sample: there is no "last success" to measure from yet.
        assert families["intercom_sync_seconds_since_last_success"] == []

    def test_every_family_of_the_spec_is_scraped_with_sensible_values(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        # Counters are process-wide (and other tests' services ran in this process): compare
        # a scrape before with one after.
        before, _ = scrape(service.url)
        sim.add_fault(path="/teams", status=500, times=1)
        run = resync(service.url)
        assert run["status"] == "succeeded"

        body = webhook_body(sim)
        url = f"{service.url}/webhooks/intercom"
        outcomes = [
            httpx.post(url, content=body, headers=signed_headers(body)).json()["status"],
            httpx.post(url, content=body, headers=signed_headers(body)).json()["status"],
        ]
        assert outcomes == ["accepted", "duplicate"]
        forged = signed_headers(body, "not-the-secret")
        assert httpx.post(url, content=body, headers=forged).status_code == 401
        ping = encode_notification(build_notification("ping", {}, app_id=sim.workspace.id_code))
        assert httpx.post(url, content=ping, headers=signed_headers(ping)).status_code == 200
        assert httpx.post(url, content=b"[]", headers=signed_headers(b"[]")).status_code == 400

        def applied() -> bool:
            ready = httpx.get(f"{service.url}/readyz").json()
            return ready["inbox_backlog"] == 0 and ready["last_webhook_at"] is not None

        wait_for(applied, timeout=30, what="the webhook to be applied")
        after, text = scrape(service.url)

        def delta(sample: str, **labels: str) -> float:
            return value(after, sample, **labels) - value(before, sample, **labels)

        # Sync runs by trigger and status, and their duration.
        assert delta("intercom_sync_runs_total", trigger="operator", status="succeeded") == 1
        assert delta("intercom_sync_run_duration_seconds_count", status="succeeded") == 1
        assert delta("intercom_sync_run_duration_seconds_sum", status="succeeded") > 0
        every = value(after, "intercom_sync_run_duration_seconds_count", status="succeeded")
        bucket = "intercom_sync_run_duration_seconds_bucket"
        assert value(after, bucket, status="succeeded", le="+Inf") == every
        # Webhooks by outcome, and what the applier did with them.
        for outcome in ("accepted", "duplicate", "unauthorized", "ignored", "rejected"):
            assert delta("intercom_webhooks_total", outcome=outcome) == 1, outcome
        assert delta("intercom_webhook_events_processed_total", result="applied") == 1
        # Apply lag: one observation, from receipt to application.
        assert delta("intercom_webhook_apply_lag_seconds_count") == 1
        assert delta("intercom_webhook_apply_lag_seconds_sum") >= 0
        # Intercom calls by endpoint and status: the 500 and the retry that succeeded.
        assert delta("intercom_api_requests_total", endpoint="teams", status="500") == 1
        assert delta("intercom_api_requests_total", endpoint="teams", status="200") == 1
        assert delta("intercom_api_requests_total", endpoint="admins", status="200") == 1
        assert delta("intercom_api_requests_total", endpoint="me", status="200") == 1
        # Store gauges, read from the store at scrape time.
        with service.client() as client:
            version = snapshot(client)["version"]
        assert value(after, "intercom_sync_store_up") == 1
        assert value(after, "intercom_sync_store_version") == version
        assert value(after, "intercom_sync_inbox_backlog") == 0
        assert value(after, "intercom_sync_inbox_oldest_pending_seconds") == 0
        (since,) = after["intercom_sync_seconds_since_last_success"]
        assert 0 <= since.value < 3600
        for name in ("intercom_sync_runs", "intercom_webhooks", "intercom_api_requests"):
            assert f"# TYPE {name}_total counter" in text or f"# TYPE {name} counter" in text


def test_the_console_format_carries_the_ids_and_redacts_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(REDACTOR, "secrets", ["console-secret-value"])
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(ConsoleFormatter())
    handler.addFilter(ContextFilter())
    logger = logging.getLogger("tests.console-format")
    logger.addHandler(handler)
    logger.propagate = False
    request_token = request_id_var.set("req-42")
    run_token = run_id_var.set("7")
    try:
        logger.warning("token console-secret-value refused")
    finally:
        run_id_var.reset(run_token)
        request_id_var.reset(request_token)
        logger.removeHandler(handler)
    line = stream.getvalue().strip()
    assert "request_id=req-42" in line
    assert "run_id=7" in line
    assert "console-secret-value" not in line
    assert "[redacted]" in line


def test_json_lines_carry_the_time_to_the_millisecond_and_the_extra_fields() -> None:
    formatter = JsonFormatter()
    logger = logging.getLogger("tests.json-format")
    # The formatter caches the date and time per second: cross seconds both ways.
    for created in (1_764_480_000.0, 1_764_480_000.9996, 1_764_480_001.0125, 1_764_479_999.5):
        record = logger.makeRecord(
            logger.name,
            logging.INFO,
            __file__,
            1,
            "%s %d",
            ("GET", 304),
            None,
            None,
            {"duration_ms": 1.5, "level": "shadowed"},
        )
        record.created = created
        entry = orjson.loads(formatter.format(record))
        expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
        assert entry["ts"] == expected
        assert entry["level"] == "info"
        assert entry["message"] == "GET 304"
        assert entry["duration_ms"] == 1.5


# ----- logs and secrets, from a real process ---------------------------------------------------

DB_PASSWORD = "db-pass-5c9e1a7d3f"


@pytest.fixture
def logged_process(database_url: str, sim: SimulatorServer, tmp_path: Path) -> Iterator[Any]:
    url = database_url
    if make_url(database_url).get_backend_name() == "postgresql":
        # The test cluster trusts local connections, so a password is accepted and ignored:
        # it can still leak, so it is one more secret to look for.
        url = make_url(database_url).set(password=DB_PASSWORD).render_as_string(False)
    process = ServiceProcess(
        service_env(url, sim, log_format="json"), log_path=tmp_path / "service.log"
    )
    process.start()
    try:
        yield process
    finally:
        try:
            process.terminate(timeout=30)
        except Exception:
            process.kill()


def secrets_configured() -> list[str]:
    values = [SIM_TOKEN, SIM_SECRET, READ_TOKEN, OPERATOR_TOKEN]
    if database_server() is not None:
        values.append(DB_PASSWORD)
    return values


def test_logs_are_json_with_request_and_run_ids_and_no_secret_escapes_anywhere(
    logged_process: ServiceProcess, sim: SimulatorServer, database_url: str
) -> None:
    process = logged_process
    url = process.url
    seen: list[str] = []  # every body and header the service answered with

    def keep(response: httpx.Response) -> httpx.Response:
        seen.append(response.text)
        seen.extend(f"{k}: {v}" for k, v in response.headers.items())
        return response

    wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, timeout=60, what="ready")

    # Intercom fails once with a 500 (retried inside the run), then refuses the token with a
    # message that quotes it back.
    sim.add_fault(path="/teams", status=500, times=1)
    assert resync(url)["status"] == "succeeded"
    sim.add_fault(
        path="/admins",
        status=401,
        error_code="unauthorized",
        message=f"Access Token Invalid: {SIM_TOKEN}",
        times=5,
    )
    failed = resync(url)
    assert failed["error"]["code"] == "intercom_auth_failed"
    operator_headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    keep(httpx.get(f"{url}/sync-runs", headers=operator_headers))
    keep(httpx.get(f"{url}/sync-runs/{failed['id']}", headers=operator_headers))

    # Webhooks with bad signatures: a wrong key, the right key over other bytes, no header.
    body = webhook_body(sim)
    hook = f"{url}/webhooks/intercom"
    for headers in (
        signed_headers(body, SIM_TOKEN),
        {"X-Hub-Signature": sign_body(b"other bytes", SIM_SECRET)},
        {"X-Hub-Signature": f"sha1={SIM_SECRET}"},
        {},
    ):
        assert keep(httpx.post(hook, content=body, headers=headers)).status_code == 401
    rejected = keep(
        httpx.post(
            hook,
            content=b"not json",
            headers={**signed_headers(b"not json"), "X-Request-ID": "rq-rejected-1"},
        )
    )
    assert rejected.status_code == 400
    assert rejected.headers["x-request-id"] == "rq-rejected-1"

    # Wrong bearer tokens: the other kind of token, near misses, other secrets, other schemes.
    for path, token in (
        ("/api/v1/snapshot", OPERATOR_TOKEN),
        ("/api/v1/snapshot", READ_TOKEN + "x"),
        ("/api/v1/users", SIM_TOKEN),
        ("/sync-runs", READ_TOKEN),
        ("/resync", SIM_SECRET),
        ("/webhook-events", OPERATOR_TOKEN[:-1]),
    ):
        method = "POST" if path == "/resync" else "GET"
        response = keep(
            httpx.request(method, f"{url}{path}", headers={"Authorization": f"Bearer {token}"})
        )
        assert response.status_code == 401, (path, response.text)
    basic = keep(httpx.get(f"{url}/api/v1/snapshot", headers={"Authorization": READ_TOKEN}))
    assert basic.status_code == 401

    ready = keep(httpx.get(f"{url}/readyz"))
    assert "auth_failed" in ready.json()["problems"]
    keep(httpx.get(f"{url}/metrics"))
    keep(httpx.get(f"{url}/openapi.json"))

    # A configuration error at start-up, through the CLI, with secrets in the environment
    # (one of them as the malformed value of a non-secret variable).
    bad_env = {
        **os.environ,
        **service_env(database_url, sim),
        "MAX_REMOVAL_FRACTION": SIM_TOKEN,
        "INTERCOM_API_BASE_URL": f"ftp://{SIM_SECRET}",
    }
    cli = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(free_port())],
        cwd=ROOT,
        env=bad_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 2, cli.stderr
    assert "MAX_REMOVAL_FRACTION" in cli.stderr
    assert "INTERCOM_API_BASE_URL" in cli.stderr
    seen.extend([cli.stdout, cli.stderr])

    process.terminate(timeout=30)
    log_text = process.log_path.read_text()
    for secret in secrets_configured():
        assert secret not in log_text, "a secret reached the log"
        for text in seen:
            assert secret not in text, f"a secret reached a response: {text[:200]}"

    lines = [orjson.loads(line) for line in log_text.splitlines() if line.strip()]
    assert lines, "the service logged nothing"
    access = [line for line in lines if line["logger"] == "app.access"]
    assert access
    assert all(line.get("request_id") for line in access)
    # The caller's request id reaches the lines logged while handling its request.
    (rejection,) = [line for line in lines if line["message"].startswith("rejected a signed")]
    assert rejection.get("request_id") == "rq-rejected-1"

    # Every line a run emits carries the run's id: the coordinator's, the baseline's, and the
    # Intercom client's retry warnings (logged from tasks and threads the run started).
    run_lines = [
        line
        for line in lines
        if line["logger"]
        in ("app.sync.baseline", "app.sync.plan", "app.sync.repairs", "app.intercom.client")
    ]
    assert any("retrying" in line["message"] for line in run_lines)
    assert [line for line in run_lines if not line.get("run_id")] == []
    for line in lines:
        mentioned = re.match(r"sync run (\d+)", line["message"])
        if line["logger"].startswith("app.sync.") and mentioned:
            assert line.get("run_id") == mentioned.group(1), line
