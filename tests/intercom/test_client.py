"""IntercomClient against the simulator (and, for shapes the simulator cannot produce, a mock
transport): defensive parsing, the headers on every call, and the retry/error policy of"""

from __future__ import annotations

import asyncio
import math
import traceback
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import httpx
import orjson
import pytest

from app.intercom.client import IntercomClient
from app.intercom.errors import (
    IntercomAuthError,
    IntercomBadResponse,
    IntercomError,
    IntercomPlanRestricted,
    IntercomRateLimited,
    IntercomUnavailable,
)
from app.intercom.models import IntercomAdmin, user_fields_from_admin
from app.intercom.retries import RetryPolicy
from app.simulator import SimulatorServer
from harness.service import OPERATOR_TOKEN, SIM_TOKEN, ServiceServer
from harness.waiting import free_port, wait_for

T = TypeVar("T")

FAST_RETRY = RetryPolicy(max_attempts=3, backoff_initial_seconds=0.01, backoff_max_seconds=0.05)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def make_client(
    base_url: str,
    *,
    token: str = SIM_TOKEN,
    api_version: str = "2.14",
    timeout: float = 5.0,
    retry: RetryPolicy = FAST_RETRY,
    transport: httpx.AsyncBaseTransport | None = None,
) -> IntercomClient:
    return IntercomClient(
        base_url=base_url,
        access_token=token,
        api_version=api_version,
        timeout_seconds=timeout,
        retry=retry,
        transport=transport,
    )


async def _call(client: IntercomClient, method: str) -> Any:
    async with client:
        return await getattr(client, method)()


def call(client: IntercomClient, method: str) -> Any:
    return run(_call(client, method))


def failure(client: IntercomClient, method: str) -> IntercomError:
    with pytest.raises(IntercomError) as info:
        call(client, method)
    return info.value


def assert_token_free(exc: BaseException, token: str = SIM_TOKEN) -> None:
    """The token is in no part of the exception: message, repr, or the formatted chain."""
    rendered = "".join(traceback.format_exception(exc))
    for text in (str(exc), repr(exc), getattr(exc, "message", ""), rendered):
        assert token not in text


# ---- shapes --------------------------------------------------------------------------------

# Every variant intercom-api.md documents, in one workspace: number and string ids, avatar as
# a string and as an object, job_title missing and null, `team_priority_level: {}`, fields the
# client has never heard of, and foreign objects inside the lists (the v1-2.0 docs put a team in
# the admins list; the Go SDK knows `nobody_admin`).
ME = {
    "type": "admin",
    "id": "991267459",
    "email": "owner@acme.example",
    "app": {"type": "app", "id_code": "abc123de", "name": "Acme", "region": "EU", "secure": False},
    "avatar": {"type": "avatar", "image_url": "https://example.invalid/a.png"},
}
ADMINS = {
    "type": "admin.list",
    "admins": [
        {
            "type": "admin",
            "id": 7890376,
            "name": "Khaliq Gant",
            "email": "khaliq@acme.example",
            "away_mode_enabled": False,
            "away_mode_reassign": False,
            "has_inbox_seat": True,
            "team_ids": [814865, "2744328"],
            "team_priority_level": {},
        },
        {
            "type": "admin",
            "id": "7890377",
            "name": "Fin",
            "email": "operator+aiiw21up@intercom.io",
            "job_title": None,
            "away_mode_enabled": False,
            "away_mode_reassign": False,
            "has_inbox_seat": True,
            "team_ids": [],
            "avatar": "https://static.intercomassets.com/avatars/7890377/square_128/fin.png",
            "brand_new_field": {"nested": [1, 2, 3]},
        },
        {
            "type": "admin",
            "id": "42",
            "name": "Ciaran Lee",
            "email": "ciaran@acme.example",
            "job_title": "Support lead",
            "away_mode_enabled": True,
            "away_mode_reassign": True,
            "has_inbox_seat": False,
            "away_status_reason_id": None,
            "team_ids": None,
            "avatar": {"type": "avatar", "image_url": "https://example.invalid/c.png"},
            "team_priority_level": {"primary_team_ids": [814865], "secondary_team_ids": []},
            "role": {"type": "role", "id": 2, "name": "Support Agent"},
        },
        {"type": "team", "id": "814865", "name": "BA_App", "admin_ids": [7890376]},
        {"type": "nobody_admin", "id": "0", "name": "Nobody"},
    ],
}
TEAMS = {
    "type": "team.list",
    "teams": [
        {
            "type": "team",
            "id": 814865,
            "name": "BA_App",
            "admin_ids": [7890376, "42"],
            "admin_priority_level": {"primary_admin_ids": [42], "secondary_admin_ids": None},
            "distribution_method": "round_robin",
            "assignment_limit": None,
        },
        {"type": "team", "id": "2744328", "name": "the_a_team"},
        {"type": "admin", "id": "7890376", "name": "Khaliq Gant"},
    ],
}


def mock_intercom(
    routes: dict[str, Any], seen: list[httpx.Request] | None = None
) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        if request.url.path not in routes:
            return httpx.Response(404, json={"type": "error.list", "errors": []})
        return httpx.Response(200, content=orjson.dumps(routes[request.url.path]))

    return httpx.MockTransport(handler)


class TestParsing:
    def test_admin_variants_parse_and_foreign_items_are_dropped(self) -> None:
        client = make_client("https://intercom.test", transport=mock_intercom({"/admins": ADMINS}))
        admins: list[IntercomAdmin] = call(client, "list_admins")

        assert [a.id for a in admins] == ["7890376", "7890377", "42"]
        khaliq, fin, ciaran = admins
        assert khaliq.job_title is None
        assert khaliq.team_ids == ["814865", "2744328"]
        assert fin.job_title is None
        assert fin.team_ids == []
        assert fin.email == "operator+aiiw21up@intercom.io"
        assert ciaran.team_ids == []
        assert (ciaran.job_title, ciaran.away_mode_enabled, ciaran.away_mode_reassign) == (
            "Support lead",
            True,
            True,
        )
        assert ciaran.has_inbox_seat is False
        assert ciaran.role is not None
        assert (ciaran.role.id, ciaran.role.name) == (
            "2",
            "Support Agent",
        )

    def test_team_ids_of_both_types_become_strings_and_foreign_items_are_dropped(self) -> None:
        client = make_client("https://intercom.test", transport=mock_intercom({"/teams": TEAMS}))
        teams = call(client, "list_teams")

        assert [(t.id, t.name, t.admin_ids) for t in teams] == [
            ("814865", "BA_App", ["7890376", "42"]),
            ("2744328", "the_a_team", []),
        ]

    def test_workspace_comes_from_the_app_object_of_me(self) -> None:
        client = make_client("https://intercom.test", transport=mock_intercom({"/me": ME}))
        workspace = call(client, "get_workspace")
        assert (workspace.id_code, workspace.name, workspace.region) == ("abc123de", "Acme", "EU")

    def test_simulator_lists_parse_with_integer_membership_ids(self, sim: SimulatorServer) -> None:
        admins = call(make_client(sim.url), "list_admins")
        teams = call(make_client(sim.url), "list_teams")
        # The simulator sends team_ids / admin_ids as JSON numbers, as Intercom does.
        raw = httpx.get(f"{sim.url}/teams", headers=sim.auth_headers).json()
        assert any(isinstance(i, int) for t in raw["teams"] for i in t["admin_ids"])

        with sim.workspace.lock:
            expected_admins = {a.id: sorted(a.team_ids) for a in sim.workspace.admins.values()}
            expected_teams = {t.id: sorted(t.admin_ids) for t in sim.workspace.teams.values()}
        assert {a.id: sorted(a.team_ids) for a in admins} == expected_admins
        assert {t.id: sorted(t.admin_ids) for t in teams} == expected_teams
        assert all(isinstance(a.id, str) for a in admins)

    def test_every_call_sends_the_version_header_and_the_bearer_token(
        self, sim: SimulatorServer
    ) -> None:
        for method in ("get_workspace", "list_admins", "list_teams"):
            call(make_client(sim.url, api_version="2.14"), method)
        requests = sim.requests()
        assert [r.path for r in requests] == ["/me", "/admins", "/teams"]
        for request in requests:
            assert request.headers["intercom-version"] == "2.14"
            assert request.headers["authorization"] == f"Bearer {SIM_TOKEN}"
            assert request.headers["accept"] == "application/json"

    def test_roles_appear_only_from_version_2_16(self, sim: SimulatorServer) -> None:
        old = call(make_client(sim.url, api_version="2.14"), "list_admins")
        new = call(make_client(sim.url, api_version="2.16"), "list_admins")

        assert all(admin.role is None for admin in old)
        with sim.workspace.lock:
            roles = {a.id: a.role for a in sim.workspace.admins.values()}
        assert {a.id: (a.role.id, a.role.name) if a.role else None for a in new} == roles
        assert any(role is not None for role in roles.values())

    def test_a_role_is_ignored_when_the_configured_version_has_none(self) -> None:
        admin = IntercomAdmin.model_validate(ADMINS["admins"][2])
        assert user_fields_from_admin(admin, roles_supported=True)["role_id"] == "2"
        assert user_fields_from_admin(admin, roles_supported=False)["role_id"] is None


# ---- retries and errors --------------------------------------------------------------------


class TestRateLimits:
    def test_429_waits_until_the_reset_then_succeeds(self, sim: SimulatorServer) -> None:
        sim.add_fault(path="/admins", status=429, reset_in_seconds=1.5)
        admins = call(make_client(sim.url), "list_admins")

        assert len(admins) == 30
        first, retry = sim.requests("/admins")
        # The simulator's X-RateLimit-Reset is ceil(its clock + 1.5) taken after logging the
        # first request, so it is at least this; the retry must not come before it (the
        # configured backoff is 10 ms, so a client ignoring the header would retry at once).
        earliest_reset = math.ceil(first.at + 1.5)
        assert retry.at >= earliest_reset

    def test_429_wait_is_bounded_and_gives_up_after_max_attempts(
        self, sim: SimulatorServer
    ) -> None:
        sim.add_fault(path="/teams", status=429, reset_in_seconds=3600, times=10)
        retry = RetryPolicy(
            max_attempts=3, backoff_initial_seconds=0.01, max_rate_limit_wait_seconds=0.05
        )
        exc = failure(make_client(sim.url, retry=retry), "list_teams")

        assert isinstance(exc, IntercomRateLimited)
        assert len(sim.requests("/teams")) == 3
        assert_token_free(exc)


class TestRetries:
    def test_5xx_is_retried_then_succeeds(self, sim: SimulatorServer) -> None:
        sim.add_fault(path="/teams", status=502, times=2)
        teams = call(make_client(sim.url), "list_teams")
        assert len(teams) == 6
        assert len(sim.requests("/teams")) == 3

    def test_5xx_fails_with_unavailable_after_max_attempts(self, sim: SimulatorServer) -> None:
        sim.add_fault(path="/admins", status=500, times=10)
        exc = failure(make_client(sim.url), "list_admins")

        assert isinstance(exc, IntercomUnavailable)
        assert exc.code == "intercom_unavailable"
        assert exc.status == 500
        assert len(sim.requests("/admins")) == 3
        assert_token_free(exc)

    def test_a_timeout_is_retried(self, sim: SimulatorServer) -> None:
        sim.add_fault(path="/admins", delay_seconds=2.5)
        # Spare attempts so a slow machine cannot time out the undelayed retry as well.
        retry = RetryPolicy(max_attempts=5, backoff_initial_seconds=0.01)
        admins = call(make_client(sim.url, timeout=1.0, retry=retry), "list_admins")

        assert len(admins) == 30
        assert len(sim.requests("/admins")) >= 2

    def test_connection_errors_fail_with_unavailable(self) -> None:
        exc = failure(make_client(f"http://127.0.0.1:{free_port()}"), "list_admins")
        assert isinstance(exc, IntercomUnavailable)
        assert "could not connect to 127.0.0.1" in exc.message
        assert_token_free(exc)

    def test_connection_errors_and_timeouts_name_the_host(self) -> None:
        def refuse(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("Connection refused", request=request)

        def slow(request: httpx.Request) -> httpx.Response:
            raise httpx.ReadTimeout("slow", request=request)

        url = "https://api.eu.intercom.io"
        refused = failure(make_client(url, transport=httpx.MockTransport(refuse)), "list_admins")
        assert isinstance(refused, IntercomUnavailable)
        assert refused.message.startswith("GET /admins: could not connect to api.eu.intercom.io")
        timed_out = failure(make_client(url, transport=httpx.MockTransport(slow)), "list_teams")
        assert isinstance(timed_out, IntercomUnavailable)
        assert "api.eu.intercom.io" in timed_out.message
        assert_token_free(refused)
        assert_token_free(timed_out)


class TestTerminalErrors:
    @pytest.mark.parametrize(
        ("status", "error_code"),
        [(401, "unauthorized"), (403, "token_revoked"), (403, "token_expired")],
    )
    def test_auth_errors_fail_at_once_with_one_request(
        self, sim: SimulatorServer, status: int, error_code: str
    ) -> None:
        sim.add_fault(path="/admins", status=status, error_code=error_code, times=10)
        exc = failure(make_client(sim.url), "list_admins")

        assert isinstance(exc, IntercomAuthError)
        assert exc.code == "intercom_auth_failed"
        assert exc.status == status
        assert len(sim.requests("/admins")) == 1
        assert_token_free(exc)

    def test_a_403_api_plan_restricted_is_a_plan_error_not_retried(
        self, sim: SimulatorServer
    ) -> None:
        sim.add_fault(path="/teams", status=403, error_code="api_plan_restricted", times=10)
        exc = failure(make_client(sim.url), "list_teams")

        assert isinstance(exc, IntercomPlanRestricted)
        assert exc.code == "intercom_plan_restricted"
        assert exc.status == 403
        assert "plan" in exc.message
        assert "refused the access token" not in exc.message
        assert len(sim.requests("/teams")) == 1
        assert_token_free(exc)

    def test_the_401_message_is_self_contained_and_said_once(self, sim: SimulatorServer) -> None:
        sim.add_fault(path="/me", status=401, times=10)
        exc = failure(make_client(sim.url), "get_workspace")

        assert not isinstance(exc, IntercomPlanRestricted)
        assert exc.message == str(exc)
        assert exc.message.count("refused the access token") == 1
        assert exc.message.startswith("Intercom refused the access token (401 unauthorized)")
        assert "GET /me" in exc.message
        assert "INTERCOM_ACCESS_TOKEN" in exc.message

    def test_a_token_intercom_does_not_know_fails_at_once(self, sim: SimulatorServer) -> None:
        wrong = "wrong-token-which-must-not-leak-42"
        exc = failure(make_client(sim.url, token=wrong), "get_workspace")

        assert isinstance(exc, IntercomAuthError)
        assert len(sim.requests("/me")) == 1
        assert_token_free(exc, wrong)

    @pytest.mark.parametrize("body", ["truncated", "not_json"])
    def test_an_unreadable_body_is_a_bad_response(self, sim: SimulatorServer, body: str) -> None:
        sim.add_fault(path="/teams", body=body, times=10)
        exc = failure(make_client(sim.url), "list_teams")

        assert isinstance(exc, IntercomBadResponse)
        assert exc.code == "intercom_bad_response"
        assert_token_free(exc)

    @pytest.mark.parametrize(
        "payload",
        [{"type": "admin.list"}, {"type": "admin.list", "admins": {"0": {}}}, ["not", "an", "obj"]],
    )
    def test_a_json_body_without_the_list_is_a_bad_response(self, payload: Any) -> None:
        client = make_client("https://intercom.test", transport=mock_intercom({"/admins": payload}))
        exc = failure(client, "list_admins")
        assert isinstance(exc, IntercomBadResponse)

    @pytest.mark.parametrize(
        ("path", "method"),
        [("/me", "get_workspace"), ("/admins", "list_admins"), ("/teams", "list_teams")],
    )
    def test_one_answer_of_the_wrong_shape_is_retried(
        self, sim: SimulatorServer, path: str, method: str
    ) -> None:
        sim.add_fault(path=path, body="wrong_shape", times=1)
        assert call(make_client(sim.url), method)
        assert len(sim.requests(path)) == 2

    def test_a_by_id_answer_that_is_not_an_object_is_retried_then_a_bad_response(
        self, sim: SimulatorServer
    ) -> None:
        # GET /teams/{id} is the by-id read the product makes (provisioning reads a team's
        # members before it writes them).
        ident = next(iter(sim.workspace.teams))
        path = f"/teams/{ident}"
        sim.add_fault(path=path, body="wrong_shape", times=10)

        async def fetch() -> Any:
            async with make_client(sim.url) as client:
                return await client.get_team(ident)

        with pytest.raises(IntercomBadResponse) as info:
            run(fetch())
        assert "not an object" in info.value.message
        assert len(sim.requests(path)) == FAST_RETRY.max_attempts
        sim.clear_faults()
        assert run(fetch()).id == ident

    def test_me_without_an_app_object_is_a_bad_response(self) -> None:
        client = make_client("https://intercom.test", transport=mock_intercom({"/me": {"id": 1}}))
        exc = failure(client, "get_workspace")
        assert isinstance(exc, IntercomBadResponse)


def test_no_error_message_contains_the_token_whatever_the_failure() -> None:
    secret = "tok_SHOULD_NEVER_APPEAR_0123456789"
    responses: list[Callable[[httpx.Request], httpx.Response]] = [
        lambda r: httpx.Response(401, json={"errors": [{"code": "unauthorized"}]}),
        lambda r: httpx.Response(403, json={"errors": [{"code": "token_revoked"}]}),
        lambda r: httpx.Response(404, json={}),
        lambda r: httpx.Response(400, json={"errors": [{"code": "parameter_invalid"}]}),
        lambda r: httpx.Response(503, text="down"),
        lambda r: httpx.Response(429, headers={"X-RateLimit-Reset": "0"}),
        lambda r: httpx.Response(200, text="{not json"),
        lambda r: (_ for _ in ()).throw(httpx.ConnectError("Connection refused", request=r)),
        lambda r: (_ for _ in ()).throw(httpx.ReadTimeout("slow", request=r)),
    ]
    for respond in responses:
        transport = httpx.MockTransport(respond)
        client = make_client("https://intercom.test", token=secret, transport=transport)
        with pytest.raises(IntercomError) as info:
            call(client, "list_admins")
        assert_token_free(info.value, secret)


def test_readyz_reports_plan_restricted_after_a_403_api_plan_restricted_run(
    service: ServiceServer, sim: SimulatorServer
) -> None:
    sim.clear_requests()
    sim.add_fault(path="/admins", status=403, error_code="api_plan_restricted", times=100)
    with service.client(OPERATOR_TOKEN) as ops:
        response = ops.post("/resync")
        assert response.status_code == 202, response.text
        run_id = response.json()["id"]
        finished = wait_for(
            lambda: (r := ops.get(f"/sync-runs/{run_id}").json())["finished_at"] and r,
            timeout=30,
            what="the run to finish",
        )
    assert finished["status"] == "failed"
    assert finished["error"]["code"] == "intercom_plan_restricted"
    assert "plan" in finished["error"]["message"]
    assert len(sim.requests("/admins")) == 1  # terminal: not retried
    ready = httpx.get(f"{service.url}/readyz", timeout=10)
    assert ready.status_code == 200  # the earlier baseline is still served
    problems = ready.json()["problems"]
    assert "plan_restricted" in problems
    assert "auth_failed" not in problems
