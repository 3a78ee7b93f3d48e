"""Webhooks racing baselines and crashes: a baseline that fetched before a newer webhook was
applied does not roll it back (and the next sync still repairs real drift); deliveries accepted
just before a SIGKILL, and events stored while the service was down, are applied exactly once
after a restart; and what operators see of all this (/readyz, /metrics, /webhook-events)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.intercom.notifications import parse_notification
from app.simulator import (
    SimAdmin,
    SimulatorServer,
    activity_log_item,
    admin_webhook_item,
    build_notification,
    encode_notification,
)
from app.store import inbox
from app.store.engine import create_database
from app.store.models import utcnow
from harness.service import (
    OPERATOR_TOKEN,
    READ_TOKEN,
    ServiceProcess,
    ServiceServer,
    served_truth,
    service_env,
    signed_headers,
    simulator_truth,
    snapshot,
)
from harness.waiting import wait_for

WEBHOOK_PATH = "/webhooks/intercom"


def post(
    base_url: str, envelope: dict[str, Any], client: httpx.Client | None = None
) -> httpx.Response:
    body = encode_notification(envelope)
    if client is None:
        with httpx.Client(timeout=10) as own:
            return own.post(base_url + WEBHOOK_PATH, content=body, headers=signed_headers(body))
    return client.post(base_url + WEBHOOK_PATH, content=body, headers=signed_headers(body))


def users_by_id(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {user["id"]: user for user in body["users"]}


def events_by_id(client: httpx.Client) -> dict[str, dict[str, Any]]:
    """`client` must carry the operator token."""
    response = client.get("/webhook-events", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return {event["id"]: event for event in response.json()["items"]}


# ----- a baseline racing a webhook ---------------------------------------------------------------


def test_a_baseline_fetched_before_a_newer_webhook_does_not_roll_it_back(
    service: ServiceServer, sim: SimulatorServer
) -> None:
    workspace = sim.workspace.id_code
    with sim.workspace.lock:
        leaver = next(a for a in sim.workspace.admins.values() if a.team_ids).copy()
    # /me and /admins answer at once; /teams keeps the run fetching while the webhooks land.
    sim.add_fault(path="/teams", delay_seconds=5)
    teams_fetches = len(sim.requests("/teams"))
    with service.client(OPERATOR_TOKEN) as operator, service.client() as reader:
        run = operator.post("/resync").json()
        wait_for(
            lambda: len(sim.requests("/teams")) > teams_fetches,
            timeout=30,
            what="the run to have fetched /admins and be waiting on /teams",
        )
        # Newer than the fetch: the leaver is removed (still listed in Intercom's /admins as
        # the run saw it), and a newcomer is added (absent from what the run fetched).
        team = leaver.team_ids[0]
        newcomer = SimAdmin(
            id="7400001", name="Late Arrival", email="late@acme.example", team_ids=[team]
        )
        removal = build_notification(
            "admin.removed_from_workspace",
            {**admin_webhook_item(leaver), "team_ids": []},
            app_id=workspace,
            created_at=int(time.time()),
        )
        addition = build_notification(
            "admin.added_to_workspace",
            admin_webhook_item(newcomer),
            app_id=workspace,
            created_at=int(time.time()),
        )
        for envelope in (removal, addition):
            assert post(service.url, envelope).json() == {"status": "accepted"}
        wait_for(
            lambda: (
                {events_by_id(operator)[e["id"]]["outcome"] for e in (removal, addition)}
                == {"applied"}
            ),
            timeout=30,
            what="both webhooks to be applied",
        )
        # The premise: the run is still fetching, so its data predates both webhooks.
        assert operator.get(f"/sync-runs/{run['id']}").json()["finished_at"] is None

        finished = wait_for(
            lambda: (r := operator.get(f"/sync-runs/{run['id']}").json())["finished_at"] and r,
            timeout=30,
            what="the run to finish",
        )

        assert finished["status"] == "succeeded", finished
        users = users_by_id(snapshot(reader))
        assert leaver.id not in users
        assert users["7400001"]["team_ids"] == [team]
        assert users_by_id(snapshot(reader, include_removed="true"))[leaver.id]["status"] == (
            "deleted"
        )

        # Intercom still lists the leaver and never heard of the newcomer: the next sync,
        # which fetches after both webhooks, repairs that drift.
        again = operator.post("/resync").json()
        wait_for(
            lambda: operator.get(f"/sync-runs/{again['id']}").json()["status"] == "succeeded",
            timeout=30,
            what="the repairing run",
        )
        body = snapshot(reader)
        assert leaver.id in users_by_id(body)
        assert "7400001" not in users_by_id(body)
        assert served_truth(body) == simulator_truth(sim)


# ----- crashes and restarts ----------------------------------------------------------------------


@pytest.mark.slow  # service processes killed and restarted
def test_accepted_deliveries_survive_sigkill_and_events_stored_while_down_apply_once(
    database_url: str,
    sim: SimulatorServer,
    tmp_path: Path,
    processes: list[ServiceProcess],
    start_service: Callable[..., ServiceServer],
) -> None:
    env = service_env(database_url, sim)
    workspace = sim.workspace.id_code
    team = next(iter(sim.workspace.teams))
    first = ServiceProcess(env, log_path=tmp_path / "first.log").start()
    processes.append(first)
    version_before = first.wait_ready()["version"]

    # A burst of deliveries, each answered 200 only once it is stored, then a SIGKILL at once:
    # some will have been applied, some not.
    burst = [
        build_notification(
            "admin.added_to_workspace",
            admin_webhook_item(
                SimAdmin(
                    id=f"74100{n:02d}",
                    name=f"Burst {n}",
                    email=f"burst{n}@acme.example",
                    team_ids=[team],
                )
            ),
            app_id=workspace,
        )
        for n in range(40)
    ]
    with httpx.Client(timeout=10) as client, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda envelope: post(first.url, envelope, client), burst))
    assert first.process is not None
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(10)
    assert [(a.status_code, a.json()) for a in answers] == [(200, {"status": "accepted"})] * 40

    # While the service is down, events land in the inbox directly (e.g. stored by a replica
    # that died too): sign-ins of known teammates.
    with sim.workspace.lock:
        known = [a.id for a in sim.workspace.admins.values()][:3]
    signed_in = {admin_id: int(time.time()) - 600 + n for n, admin_id in enumerate(known)}
    stored = [
        build_notification(
            "admin.logged_in",
            {"type": "admin", "id": int(admin_id)},
            app_id=workspace,
            created_at=created_at,
        )
        for admin_id, created_at in signed_in.items()
    ]
    db = create_database(database_url)
    try:
        with db.writing() as session:
            new = inbox.store_events(
                session,
                [
                    inbox.NewEvent.of(parse_notification(body), body, received_at=utcnow())
                    for body in map(encode_notification, stored)
                ],
            )
        assert new == [True] * len(stored)
    finally:
        db.dispose()

    # The restart (in-process here: the crash above is what needed a real process).
    second = start_service()

    wanted = {envelope["id"] for envelope in (*burst, *stored)}
    with second.client(OPERATOR_TOKEN) as operator, second.client(READ_TOKEN) as reader:

        def all_settled() -> dict[str, dict[str, Any]] | None:
            events = events_by_id(operator)
            done = all(
                events.get(nid, {}).get("outcome") not in (None, "pending") for nid in wanted
            )
            return events if done else None

        events = wait_for(all_settled, timeout=60, what="every stored event to be processed")
        for nid in wanted:
            event = events[nid]
            assert (event["outcome"], event["deliveries"], event["attempts"]) == (
                "applied",
                1,
                1,
            ), event
        assert httpx.get(second.url + "/readyz", timeout=5).json()["inbox_backlog"] == 0

        users = users_by_id(snapshot(reader))
        for n in range(40):
            assert users[f"74100{n:02d}"]["team_ids"] == [team]
        for admin_id, created_at in signed_in.items():
            assert users[admin_id]["last_login_at"] == time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(created_at)
            )

        # Exactly once: one change per teammate in the change log since the crash's start.
        changes: list[dict[str, Any]] = []
        since = version_before
        while True:
            page = reader.get("/api/v1/changes", params={"since": since, "limit": 1000}).json()
            changes += page["changes"]
            if not page["changes"]:
                break
            since = page["next_since"]
        user_changes = [c["resource_id"] for c in changes if c["resource_type"] == "user"]
        expected_ids = [f"74100{n:02d}" for n in range(40)] + list(signed_in)
        assert sorted(user_changes) == sorted(expected_ids)


# ----- what operators see ------------------------------------------------------------------------


def scrape(service: ServiceServer) -> dict[str, float]:
    """Every sample of /metrics as `name{label="value",…}` → value."""
    text = httpx.get(service.url + "/metrics", timeout=10).text
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def test_readyz_metrics_and_webhook_events_show_what_webhooks_did(
    service: ServiceServer, sim: SimulatorServer
) -> None:
    workspace = sim.workspace.id_code
    with sim.workspace.lock:
        admin = next(iter(sim.workspace.admins.values())).copy()
    before = scrape(service)
    ready = httpx.get(service.url + "/readyz", timeout=10).json()
    assert ready["last_webhook_at"] is None

    login = build_notification("admin.logged_in", admin_webhook_item(admin), app_id=workspace)
    unknown = build_notification(
        "contact.created", {"type": "contact", "id": "1"}, app_id=workspace
    )
    body = encode_notification(login)
    with httpx.Client(base_url=service.url, timeout=10) as client:
        answers = {
            "accepted": client.post(WEBHOOK_PATH, content=body, headers=signed_headers(body)),
            "duplicate": client.post(WEBHOOK_PATH, content=body, headers=signed_headers(body)),
            "ignored": post(service.url, unknown, client),
            "rejected": client.post(WEBHOOK_PATH, content=b"nope", headers=signed_headers(b"nope")),
            "unauthorized": client.post(
                WEBHOOK_PATH, content=body, headers=signed_headers(body, "wrong-secret")
            ),
        }
    assert {name: r.status_code for name, r in answers.items()} == {
        "accepted": 200,
        "duplicate": 200,
        "ignored": 200,
        "rejected": 400,
        "unauthorized": 401,
    }
    assert answers["duplicate"].json() == {"status": "duplicate"}

    def drained() -> dict[str, Any] | None:
        state = httpx.get(service.url + "/readyz", timeout=10).json()
        return state if state["inbox_backlog"] == 0 and state["last_webhook_at"] else None

    ready = wait_for(drained, timeout=30, what="the inbox to drain")
    assert ready["status"] == "ok", ready

    after = scrape(service)
    for outcome in ("accepted", "duplicate", "ignored", "rejected", "unauthorized"):
        key = f'intercom_webhooks_total{{outcome="{outcome}"}}'
        assert after.get(key, 0) - before.get(key, 0) == 1, (outcome, before.get(key), after[key])
    lag = "intercom_webhook_apply_lag_seconds_count{}"
    assert after[lag] - before.get(lag, 0) >= 1

    with service.client(OPERATOR_TOKEN) as operator:
        applied = operator.get("/webhook-events", params={"status": "applied", "limit": 5})
        assert applied.status_code == 200, applied.text
        items = applied.json()["items"]
        assert [(e["id"], e["topic"], e["outcome"]) for e in items] == [
            (login["id"], "admin.logged_in", "applied")
        ]
        assert items[0]["received_at"]
        assert items[0]["applied_at"]
        assert items[0]["teammate_id"] == admin.id

        everything = operator.get("/webhook-events", params={"limit": 5}).json()["items"]
        assert len(everything) == 3  # accepted (with its duplicate), ignored, rejected
        bad = operator.get("/webhook-events", params={"status": "bogus"})
        assert bad.status_code == 400
        assert set(bad.json()["error"]) == {"code", "message"}
        assert operator.get("/webhook-events", params={"limit": 0}).status_code == 400
    with service.client() as reader:
        assert reader.get("/webhook-events").status_code == 401


def test_a_baseline_keeps_a_sign_in_time_recorded_while_it_was_fetching(
    start_service: Callable[..., ServiceServer], sim: SimulatorServer
) -> None:
    # Baselines never carry sign-in times, so one that a webhook recorded while the run was
    # fetching must survive the run's write.
    service = start_service()
    with sim.workspace.lock:
        admin = next(iter(sim.workspace.admins.values())).copy()
    sim.add_fault(path="/teams", delay_seconds=2)
    teams_fetches = len(sim.requests("/teams"))
    created = int(time.time()) - 5
    with service.client(OPERATOR_TOKEN) as operator, service.client() as reader:
        run = operator.post("/resync").json()
        wait_for(
            lambda: len(sim.requests("/teams")) > teams_fetches,
            timeout=30,
            what="the run to be fetching",
        )
        login = build_notification(
            "admin.logged_in",
            admin_webhook_item(admin),
            app_id=sim.workspace.id_code,
            created_at=created,
        )
        assert post(service.url, login).json() == {"status": "accepted"}
        wait_for(
            lambda: events_by_id(operator)[login["id"]]["outcome"] == "applied",
            timeout=30,
            what="the sign-in to be applied",
        )
        wait_for(
            lambda: operator.get(f"/sync-runs/{run['id']}").json()["status"] == "succeeded",
            timeout=30,
            what="the run",
        )
        user = users_by_id(snapshot(reader))[admin.id]
        assert user["last_login_at"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))


def test_a_team_change_signalled_while_a_baseline_fetches_gets_a_refresh_after_it(
    service: ServiceServer, sim: SimulatorServer
) -> None:
    # The run below read /admins before the change; its data cannot show it, so the refresh
    # the activity event asks for must come after that run rather than merge into it.
    with sim.workspace.lock:
        admin = next(a for a in sim.workspace.admins.values() if a.team_ids).copy()
    team = admin.team_ids[0]
    sim.add_fault(path="/teams", delay_seconds=3)
    teams_fetches = len(sim.requests("/teams"))
    with service.client(OPERATOR_TOKEN) as operator, service.client() as reader:
        run = operator.post("/resync").json()
        wait_for(
            lambda: len(sim.requests("/teams")) > teams_fetches,
            timeout=30,
            what="the run to be waiting on /teams",
        )
        sim.workspace.remove_member(team, admin.id)
        signal_event = build_notification(
            "admin.activity_log_event.created",
            activity_log_item("app_team_membership_modification", performed_by_id=admin.id),
            app_id=sim.workspace.id_code,
        )
        assert post(service.url, signal_event).json() == {"status": "accepted"}
        wait_for(
            lambda: events_by_id(operator)[signal_event["id"]]["outcome"] == "applied",
            timeout=30,
            what="the activity event to be applied",
        )
        # The premise: the refresh was asked for while the run was still fetching.
        assert operator.get(f"/sync-runs/{run['id']}").json()["finished_at"] is None

        def webhook_run_done() -> dict[str, Any] | None:
            runs = operator.get("/sync-runs", params={"limit": 20}).json()["items"]
            later = [r for r in runs if r["trigger"] == "webhook" and r["id"] > run["id"]]
            return later[0] if later and later[0]["finished_at"] else None

        refresh = wait_for(webhook_run_done, timeout=30, what="a refresh after the run")
        assert refresh["status"] == "succeeded", refresh
        assert operator.get(f"/sync-runs/{run['id']}").json()["status"] == "succeeded"
        assert served_truth(snapshot(reader)) == simulator_truth(sim)


def test_a_late_added_created_before_a_baseline_removal_does_not_bring_the_teammate_back(
    service: ServiceServer, sim: SimulatorServer
) -> None:
    workspace = sim.workspace.id_code
    with sim.workspace.lock:
        admin = next(a for a in sim.workspace.admins.values() if a.team_ids).copy()
    sim.workspace.remove_admin(admin.id)
    with service.client(OPERATOR_TOKEN) as operator, service.client() as reader:
        removal = operator.post("/resync").json()
        wait_for(
            lambda: operator.get(f"/sync-runs/{removal['id']}").json()["status"] == "succeeded",
            timeout=30,
            what="the baseline that sees the teammate gone",
        )
        assert admin.id not in users_by_id(snapshot(reader))

        def late_added_then_refresh() -> dict[str, Any]:
            # Created an hour ago, delivered only now (Intercom retries late deliveries).
            envelope = build_notification(
                "admin.added_to_workspace",
                admin_webhook_item(admin),
                app_id=workspace,
                created_at=int(time.time()) - 3600,
            )
            runs_before = {r["id"] for r in operator.get("/sync-runs").json()["items"]}
            assert post(service.url, envelope).json() == {"status": "accepted"}

            def refreshed() -> dict[str, Any] | None:
                runs = operator.get("/sync-runs").json()["items"]
                new = [r for r in runs if r["id"] not in runs_before]
                return new[0] if new and new[0]["finished_at"] else None

            run = wait_for(refreshed, timeout=30, what="the refresh the late event asks for")
            assert run["trigger"] == "webhook"
            assert run["status"] == "succeeded", run
            assert events_by_id(operator)[envelope["id"]]["outcome"] == "ignored"
            return snapshot(reader)

        # Still gone in Intercom: the late "added" changes nothing.
        assert admin.id not in users_by_id(late_added_then_refresh())
        # Back in Intercom (the late event cannot say so, its clock predates the removal): the
        # refresh it asked for finds them.
        sim.workspace.upsert_admin(admin)
        body = late_added_then_refresh()
        assert users_by_id(body)[admin.id]["team_ids"] == sorted(admin.team_ids)
        assert served_truth(body) == simulator_truth(sim)
