"""Graceful shutdown: on SIGTERM a real `intercom-sync serve` process stops taking work,
finishes or releases what it claimed (requests in flight, the inbox batch, a sync run and its
locks) and exits within a bounded time; a rolling restart of one replica during a stream of
webhooks loses none and applies none twice."""

from __future__ import annotations

import signal
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from app.simulator import SimulatorServer
from harness.service import ReplicaFactory, ServiceProcess, ServiceServer
from harness.waiting import wait_for
from tests.e2e.test_replicas import (
    DeliveryLog,
    all_runs,
    assert_applied_exactly_once,
    assert_replicas_serve_the_truth,
    assert_runs_never_overlap,
    change_log,
    deliver_like_intercom,
    inbox_events,
    new_admin,
    notification,
    operator,
    wait_until_settled,
)

# Service processes stopped and restarted under load: left out of `make test-fast`.
pytestmark = pytest.mark.slow

# SIGTERM is handled (uvicorn drains, the lifespan stops the background work), then uvicorn
# re-raises it so the exit status still says "terminated": either form is a clean stop.
CLEAN_EXIT = (0, -signal.SIGTERM)


def stop_gracefully(replica: ServiceProcess) -> None:
    """SIGTERM, then require a clean, complete shutdown within a generous bound."""
    code = replica.terminate(timeout=30)
    assert code in CLEAN_EXIT, f"exit status {code}: see {replica.log_path}"
    log = replica.log_path.read_text()
    assert "intercom-sync stopped" in log
    assert "Application shutdown complete" in log


def test_sigterm_mid_sync_releases_the_run_at_once_and_start_up_redoes_it(
    start_replicas: ReplicaFactory,
    start_service: Callable[..., ServiceServer],
    sim: SimulatorServer,
) -> None:
    """A run still fetching from Intercom is interrupted (nothing was written), its slot is
    released rather than left to the heartbeat lease, and the next start-up runs it again."""
    (replica,) = start_replicas(1)
    # The run's team fetch would hang for a minute: far longer than the exit may take.
    sim.add_fault(path="/teams", delay_seconds=60, times=1)
    teams_calls = len(sim.requests("/teams"))
    with operator(replica) as client:
        interrupted = client.post("/resync").json()
    wait_for(
        lambda: len(sim.requests("/teams")) > teams_calls,
        timeout=30,
        what="the run to be fetching teams",
    )
    stop_gracefully(replica)
    assert f"sync run {interrupted['id']} interrupted" in replica.log_path.read_text()

    # The next process finds the slot free and the interrupted run to redo.
    restarted = start_service()
    wait_until_settled(restarted)
    runs = sorted(all_runs(restarted), key=lambda run: run["id"])
    stopped = next(run for run in runs if run["id"] == interrupted["id"])
    assert stopped["status"] == "failed"
    assert stopped["error"]["code"] == "interrupted"
    assert stopped["finished_at"] is not None
    redo = runs[-1]
    assert redo["id"] > stopped["id"]
    assert (redo["trigger"], redo["status"]) == ("startup", "succeeded")
    assert_runs_never_overlap(runs)


def test_rolling_restart_of_a_replica_loses_no_webhook_and_applies_none_twice(
    start_replicas: ReplicaFactory,
    start_service: Callable[..., ServiceServer],
    sim: SimulatorServer,
) -> None:
    """Replica A is stopped and started again while Intercom keeps delivering to both A and
    B; deliveries A refuses while it is down are retried, as Intercom retries them."""
    (replica_a,) = start_replicas(1)
    replica_b = start_service()  # the replica that stays up, served from this process
    urls = [replica_a.url, replica_b.url]
    log = DeliveryLog()
    stop = threading.Event()
    errors: list[BaseException] = []

    def stream(lane: int) -> None:
        # Two lanes of deliveries in parallel, so some are in flight when A gets SIGTERM.
        number = lane
        try:
            while not stop.is_set():
                notification_id, body = notification(
                    sim, "admin.added_to_workspace", new_admin(sim, number)
                )
                deliver_like_intercom(urls, notification_id, body, log, first=number // 2)
                number += 2
        except BaseException as exc:  # surfaced by the main thread
            errors.append(exc)

    senders = [
        threading.Thread(target=stream, args=(lane,), name=f"sender-{lane}", daemon=True)
        for lane in (0, 1)
    ]
    for sender in senders:
        sender.start()
    try:
        wait_for(lambda: log.accepted(replica_a.url) >= 5, timeout=60, what="A taking webhooks")
        stop_gracefully(replica_a)
        # A is down: the stream goes on, and deliveries aimed at A get refused and retried.
        wait_for(lambda: log.refused() >= 1, timeout=60, what="a delivery refused by A")
        accepted_before = log.accepted(replica_a.url)
        replica_a.start()
        wait_for(
            lambda: log.accepted(replica_a.url) >= accepted_before + 5,
            timeout=60,
            what="the restarted A taking webhooks again",
        )
    finally:
        stop.set()
        for sender in senders:
            sender.join(60)
    assert errors == []

    wait_until_settled(replica_b)
    events = inbox_events(replica_b)
    assert_applied_exactly_once(events, log)
    # Each joiner shows up in the change log exactly once.
    joined = Counter(
        change["resource_id"]
        for change in change_log(replica_b)
        if change["resource_type"] == "user" and change["op"] == "upsert"
    )
    joiners = {event["teammate_id"] for event in events}
    assert {joiner: joined[joiner] for joiner in joiners} == dict.fromkeys(joiners, 1)
    assert_replicas_serve_the_truth([replica_a, replica_b], sim)
    with operator(replica_a) as client:
        ready: dict[str, Any] = client.get("/readyz").json()
    assert ready["inbox_backlog"] == 0
