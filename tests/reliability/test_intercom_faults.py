"""Intercom misbehaving during a sync: every run ends in its documented state, and while a run
fails the last good snapshot stays served byte for byte (reliability rules R7, R8, R11, R12).

Each failing scenario changes the simulator's workspace first, so that a run which wrongly
applied anything would show in the snapshot; each ends by clearing the fault and checking that
the next run catches up with the workspace."""

from __future__ import annotations

import math
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from app.simulator import SimAdmin, SimulatorServer
from harness.service import ServiceServer, served_truth, simulator_truth, snapshot
from harness.waiting import wait_for
from harness.workload import assert_consistent, operator, raw_snapshot, reader, readiness, resync

StartService = Callable[..., ServiceServer]


def change_workspace(sim: SimulatorServer) -> None:
    """A change any successful baseline would serve: one teammate joins, a team is renamed."""
    ws = sim.workspace
    first_team = next(iter(ws.teams))
    ws.upsert_admin(
        SimAdmin(
            id="770000001", name="New Joiner", email="joiner@acme.example", team_ids=[first_team]
        )
    )
    with ws.lock:
        ws.teams[first_team].name = "Renamed Team"


def fail_keeping_snapshot(
    service: ServiceServer, sim: SimulatorServer, *, status: str, code: str, problem: str
) -> dict[str, Any]:
    """Resync under the fault already queued; the run must end `status` with error `code`, the
    snapshot must not change by a byte, and /readyz must stay ready and name `problem`."""
    with reader(service.url) as client, operator(service.url) as op:
        etag, body = raw_snapshot(client)
        change_workspace(sim)
        run = resync(op)
        assert run["status"] == status, run
        assert run["error"] is not None, run
        assert run["error"]["code"] == code, run
        assert raw_snapshot(client) == (etag, body)
        ready_status, ready = readiness(service.url)
        assert ready_status == 200, ready  # the last good snapshot is still served
        assert problem in ready["problems"], ready
    return run


def recovers(service: ServiceServer, sim: SimulatorServer) -> None:
    """Once Intercom behaves again the next run serves the workspace as it is."""
    sim.clear_faults()
    with reader(service.url) as client, operator(service.url) as op:
        run = resync(op)
        assert run["status"] == "succeeded", run
        body = snapshot(client)
    assert served_truth(body) == simulator_truth(sim)
    assert_consistent(body)
    _, ready = readiness(service.url)
    assert not {"auth_failed", "sync_failing", "blocked_mass_removal"} & set(ready["problems"])


def succeeds_despite(service: ServiceServer, sim: SimulatorServer) -> dict[str, Any]:
    """Resync under the fault already queued: the run retries through it and succeeds."""
    with reader(service.url) as client, operator(service.url) as op:
        change_workspace(sim)
        run = resync(op)
        assert run["status"] == "succeeded", run
        assert run["stats"]["users_added"] == 1, run
        assert run["stats"]["teams_updated"] == 1, run
        assert served_truth(snapshot(client)) == simulator_truth(sim)
    return run


# ----- rate limits -------------------------------------------------------------------------------


def test_429_burst_waits_for_rate_limit_reset_then_succeeds(
    service: ServiceServer, sim: SimulatorServer
) -> None:
    sim.clear_requests()
    sim.add_fault(path="/admins", status=429, times=2, reset_in_seconds=1)
    succeeds_despite(service, sim)
    calls = sim.requests("/admins")
    assert len(calls) == 3  # two refusals, one success: no retry storm
    for refused, retry in zip(calls, calls[1:], strict=False):
        # X-RateLimit-Reset is the next whole second at least one second after the refusal;
        # the retry must not come before it.
        assert retry.at >= math.ceil(refused.at + 1) - 1e-3, (refused.at, retry.at)


# ----- server errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503])
def test_short_5xx_burst_is_retried_and_the_run_succeeds(
    service: ServiceServer, sim: SimulatorServer, status: int
) -> None:
    sim.add_fault(path="/teams", status=status, times=2)  # INTERCOM_MAX_ATTEMPTS is 3
    succeeds_despite(service, sim)


def test_long_5xx_burst_fails_the_run_as_unavailable_and_keeps_the_snapshot(
    service: ServiceServer, sim: SimulatorServer
) -> None:
    sim.add_fault(path="/teams", status=503, times=50)
    fail_keeping_snapshot(
        service, sim, status="failed", code="intercom_unavailable", problem="sync_failing"
    )
    recovers(service, sim)


# ----- timeouts ----------------------------------------------------------------------------------


def test_a_slow_answer_times_out_and_the_retry_succeeds(
    start_service: StartService, sim: SimulatorServer
) -> None:
    service = start_service(intercom_timeout_seconds=0.5)
    sim.add_fault(path="/admins", delay_seconds=2, times=1)
    succeeds_despite(service, sim)


def test_answers_slower_than_the_timeout_fail_the_run_and_keep_the_snapshot(
    start_service: StartService, sim: SimulatorServer
) -> None:
    service = start_service(intercom_timeout_seconds=0.5)
    sim.add_fault(path="/admins", delay_seconds=2, times=3)
    run = fail_keeping_snapshot(
        service, sim, status="failed", code="intercom_unavailable", problem="sync_failing"
    )
    assert "timed out" in run["error"]["message"]
    recovers(service, sim)


# ----- connection resets -------------------------------------------------------------------------


class ResettingProxy:
    """A loopback HTTP/1.1 front for the simulator that can cut connections with a TCP reset.

    Requests for a path in `reset_paths` get a reset instead of an answer while `resets_left`
    is above zero; with `reset_on_accept`, every new connection is reset before anything is
    read. Everything else is forwarded to the simulator."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.reset_paths: set[str] = set()
        self.resets_left = 0
        self.reset_on_accept = False
        self.resets = 0
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._closed = False
        threading.Thread(target=self._accept, name="resetting-proxy", daemon=True).start()

    def reset(self, *paths: str, times: int = 1_000_000) -> None:
        with self._lock:
            self.reset_paths, self.resets_left = set(paths), times

    def close(self) -> None:
        self._closed = True
        self._sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _take_reset(self, path: str | None) -> bool:
        with self._lock:
            wanted = self.reset_on_accept if path is None else path in self.reset_paths
            if wanted and (path is None or self.resets_left > 0):
                self.resets += 1
                if path is not None:
                    self.resets_left -= 1
                return True
        return False

    @staticmethod
    def _rst(conn: socket.socket) -> None:
        # Linger on with a zero timeout: close() sends RST instead of an orderly FIN.
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    def _serve(self, conn: socket.socket) -> None:
        if self._take_reset(None):
            self._rst(conn)
            return
        buffer = b""
        with conn, httpx.Client(base_url=self.upstream, timeout=30) as upstream:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                method, target, _version = request_line.split(" ", 2)
                headers = {
                    name.strip().lower(): value.strip()
                    for name, _, value in (line.partition(":") for line in header_lines)
                }
                if self._take_reset(target.split("?", 1)[0]):
                    self._rst(conn)
                    return
                forwarded: dict[str, str] = {
                    key: headers[key]
                    for key in ("authorization", "accept", "intercom-version")
                    if key in headers
                }
                answer = upstream.request(method, target, headers=forwarded)
                lines = [f"HTTP/1.1 {answer.status_code} {answer.reason_phrase}"]
                for name in (
                    "content-type",
                    "x-ratelimit-limit",
                    "x-ratelimit-remaining",
                    "x-ratelimit-reset",
                    "x-request-id",
                ):
                    if name in answer.headers:
                        lines.append(f"{name}: {answer.headers[name]}")
                lines.append(f"content-length: {len(answer.content)}")
                conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + answer.content)


@pytest.fixture
def proxy(sim: SimulatorServer) -> Iterator[ResettingProxy]:
    front = ResettingProxy(sim.url)
    yield front
    front.close()


def test_connection_resets_after_me_are_retried_and_the_run_succeeds(
    start_service: StartService, sim: SimulatorServer, proxy: ResettingProxy
) -> None:
    service = start_service(intercom_api_base_url=proxy.url)
    proxy.reset("/admins", times=2)
    succeeds_despite(service, sim)
    assert proxy.resets == 2


def test_connections_reset_mid_run_fail_it_as_unavailable_and_keep_the_snapshot(
    start_service: StartService, sim: SimulatorServer, proxy: ResettingProxy
) -> None:
    service = start_service(intercom_api_base_url=proxy.url)
    proxy.reset("/teams")  # /me and /admins answer; every /teams connection is cut
    run = fail_keeping_snapshot(
        service, sim, status="failed", code="intercom_unavailable", problem="sync_failing"
    )
    assert proxy.resets == 3, run  # INTERCOM_MAX_ATTEMPTS, then the run gives up
    proxy.reset()
    recovers(service, sim)


def test_connections_reset_on_accept_fail_the_run_and_keep_the_snapshot(
    start_service: StartService, sim: SimulatorServer, proxy: ResettingProxy
) -> None:
    service = start_service(intercom_api_base_url=proxy.url)
    proxy.reset_on_accept = True
    fail_keeping_snapshot(
        service, sim, status="failed", code="intercom_unavailable", problem="sync_failing"
    )
    proxy.reset_on_accept = False
    recovers(service, sim)


# ----- bodies that are not what Intercom sends ---------------------------------------------------


@pytest.mark.parametrize(("path", "body"), [("/admins", "truncated"), ("/teams", "not_json")])
def test_unparseable_bodies_fail_the_run_as_bad_response_and_keep_the_snapshot(
    service: ServiceServer, sim: SimulatorServer, path: str, body: str
) -> None:
    sim.add_fault(path=path, body=body, times=50)
    fail_keeping_snapshot(
        service, sim, status="failed", code="intercom_bad_response", problem="sync_failing"
    )
    recovers(service, sim)


def test_one_truncated_body_is_retried_and_the_run_succeeds(
    service: ServiceServer, sim: SimulatorServer
) -> None:
    sim.add_fault(path="/teams", body="truncated", times=1)
    succeeds_despite(service, sim)


WRONG_SHAPES = [
    ("/me", "wrong_shape"),  # no `app`
    ("/admins", "wrong_shape"),  # no `admins`
    ("/teams", "wrong_shape"),  # `teams` is not a list
    ("/admins", "non_object_items"),
    ("/teams", "non_object_items"),
]


@pytest.mark.parametrize(("path", "body"), WRONG_SHAPES)
def test_one_json_answer_of_the_wrong_shape_is_retried_and_the_run_succeeds(
    service: ServiceServer, sim: SimulatorServer, path: str, body: str
) -> None:
    sim.clear_requests()
    sim.add_fault(path=path, body=body, times=1)
    succeeds_despite(service, sim)
    assert len(sim.requests(path)) == 2  # the wrong answer, then the good one


@pytest.mark.parametrize(("path", "body"), WRONG_SHAPES)
def test_json_of_the_wrong_shape_every_time_fails_the_run_as_bad_response_and_applies_nothing(
    service: ServiceServer, sim: SimulatorServer, path: str, body: str
) -> None:
    sim.clear_requests()
    sim.add_fault(path=path, body=body, times=50)
    run = fail_keeping_snapshot(
        service, sim, status="failed", code="intercom_bad_response", problem="sync_failing"
    )
    assert path in run["error"]["message"]
    assert "wrong shape" in run["error"]["message"] or "'app'" in run["error"]["message"]
    assert len(sim.requests(path)) == service.settings.intercom_max_attempts
    recovers(service, sim)


# ----- credentials revoked mid-run ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_code"), [(401, "unauthorized"), (401, "token_revoked"), (403, "forbidden")]
)
def test_auth_failure_after_me_fails_at_once_and_keeps_the_snapshot(
    service: ServiceServer, sim: SimulatorServer, status: int, error_code: str
) -> None:
    sim.clear_requests()
    sim.add_fault(path="/teams", status=status, error_code=error_code, times=50)
    fail_keeping_snapshot(
        service, sim, status="failed", code="intercom_auth_failed", problem="auth_failed"
    )
    assert len(sim.requests("/me")) == 1
    assert len(sim.requests("/teams")) == 1  # terminal: no retry loop
    recovers(service, sim)


# ----- data Intercom should not send -------------------------------------------------------------


def test_an_empty_admin_list_blocks_the_run_and_applies_nothing(
    service: ServiceServer, sim: SimulatorServer
) -> None:
    sim.add_fault(path="/admins", body="empty_admins", times=50)
    fail_keeping_snapshot(
        service, sim, status="blocked", code="mass_removal_blocked", problem="blocked_mass_removal"
    )
    recovers(service, sim)


def test_memberships_naming_unknown_teammates_or_teams_are_ignored(
    service: ServiceServer, sim: SimulatorServer
) -> None:
    ws = sim.workspace
    with ws.lock:
        # Deliberately inconsistent: each side names something the other side does not list.
        team = next(iter(ws.teams.values()))
        team.admin_ids.append("990000999")
        admin = next(iter(ws.admins.values()))
        admin.team_ids.append("990000888")
    with reader(service.url) as client, operator(service.url) as op:
        run = resync(op)
        assert run["status"] == "succeeded", run
        body = snapshot(client)
    assert_consistent(body)
    served = served_truth(body)
    assert "990000999" not in served[0]
    assert "990000888" not in served[1]
    with ws.lock:
        team.admin_ids.remove("990000999")
        admin.team_ids.remove("990000888")
    assert served == simulator_truth(sim)


def test_overlong_names_and_unusable_team_ids_do_not_stop_a_baseline(
    service: ServiceServer, sim: SimulatorServer
) -> None:
    """PostgreSQL refuses values longer than a column: one teammate with a 600-character name
    must not fail every baseline (on SQLite it never did), and one odd entry in a teammate's
    team ids must not make them unparseable (and so removed)."""
    ws = sim.workspace
    first_team = next(iter(ws.teams))
    ws.upsert_admin(
        SimAdmin(id="770000002", name="N" * 600, email="long@acme.example",
                 job_title="J" * 600, team_ids=[first_team])
    )  # fmt: skip
    with ws.lock:
        ws.teams[first_team].name = "T" * 700
        # The REST item of this teammate will carry a team id no store could hold.
        ws.admins["770000002"].team_ids.append("t" * 100)
    with reader(service.url) as client, operator(service.url) as op:
        run = resync(op)
        assert run["status"] == "succeeded", run
        body = snapshot(client)
    assert_consistent(body)
    long_user = next(user for user in body["users"] if user["id"] == "770000002")
    assert long_user["display_name"] == "N" * 512
    assert long_user["team_ids"] == [first_team]
    team = next(team for team in body["teams"] if team["id"] == first_team)
    assert team["display_name"] == "T" * 512


def test_intercom_down_past_two_reconcile_periods_turns_readiness_stale_not_unready(
    start_service: StartService, sim: SimulatorServer
) -> None:
    """Rule R10: with every reconcile failing, /readyz says `sync_stale` once the last good
    sync is older than two periods, while the last good snapshot stays served; the first
    reconcile that gets through clears it."""
    service = start_service(reconcile_interval_seconds=1, reconcile_allow_short_interval=True)
    with reader(service.url) as client:
        before = raw_snapshot(client)
        sim.add_fault(path="/me", status=503, times=100_000)

        def stale() -> dict[str, Any] | None:
            status, body = readiness(service.url)
            assert status == 200, body  # degraded, never unready: C1 keeps its snapshot
            return body if "sync_stale" in body["problems"] else None

        body = wait_for(stale, timeout=30, interval=0.1, what="readiness to report sync_stale")
        assert body["status"] == "degraded"
        assert raw_snapshot(client) == before
        sim.clear_faults()
        wait_for(
            lambda: "sync_stale" not in readiness(service.url)[1]["problems"],
            timeout=30,
            interval=0.1,
            what="a reconcile to clear sync_stale",
        )
