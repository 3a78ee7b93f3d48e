"""Who may call what: every route against every kind of credential. Each test
walks all routes and reports every miss at once, so one service start covers a whole column."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import httpx
import pytest

from app.simulator import SimulatorServer
from harness.service import OPERATOR_TOKEN, READ_TOKEN, ServiceServer

StartService = Callable[..., ServiceServer]
Route = tuple[str, str]

READ_ROUTES: list[Route] = [
    ("GET", "/api/v1/snapshot"),
    ("GET", "/api/v1/snapshot?include_removed=true"),
    ("GET", "/api/v1/users"),
    ("GET", "/api/v1/users/{user}"),
    ("GET", "/api/v1/teams"),
    ("GET", "/api/v1/teams/{team}"),
    ("GET", "/api/v1/teams/{team}/members"),
    ("GET", "/api/v1/roles"),
    ("GET", "/api/v1/roles/1"),
    ("GET", "/api/v1/roles/1/members"),
    ("GET", "/api/v1/workspaces"),
    ("GET", "/api/v1/workspaces/{workspace}"),
    ("GET", "/api/v1/workspaces/{workspace}/members"),
    ("GET", "/api/v1/grants"),
    ("GET", "/api/v1/changes?since=0"),
]
OPERATOR_ROUTES: list[Route] = [
    ("POST", "/resync"),
    ("GET", "/sync-runs"),
    ("GET", "/sync-runs/1"),
    ("GET", "/webhook-events"),
]
OPEN_ROUTES: list[Route] = [
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("HEAD", "/webhooks/intercom"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/redoc"),
    ("GET", "/docs/assets/swagger-ui-bundle.js"),
]

WRONG_TOKEN = "not-a-token-anyone-configured-31337"
SHARED_TOKEN = "shared-read-and-operator-token-2718"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def refusal_problem(response: httpx.Response, route: Route, presented: str | None) -> str | None:
    """What is wrong with this refusal, or None if it is right."""
    if response.status_code != 401:
        return f"{route}: {response.status_code}, expected 401"
    body = response.json()
    if set(body) != {"error"} or set(body["error"]) != {"code", "message"}:
        return f"{route}: 401 body is not the error shape: {body}"
    if body["error"]["code"] != "unauthorized" or not body["error"]["message"]:
        return f"{route}: unexpected 401 body {body}"
    if presented and presented in response.text:
        return f"{route}: the 401 echoes the presented token"
    return None


class Caller:
    """Calls the service's routes with ids that exist in its workspace."""

    def __init__(self, service: ServiceServer, sim: SimulatorServer) -> None:
        self.http = httpx.Client(base_url=service.url, timeout=30)
        with sim.workspace.lock:
            team = next(iter(sim.workspace.teams.values()))
            self.ids = {
                "team": team.id,
                "user": team.admin_ids[0],
                "workspace": sim.workspace.id_code,
            }

    def close(self) -> None:
        self.http.close()

    def call(self, route: Route, headers: dict[str, str]) -> httpx.Response:
        method, path = route
        return self.http.request(method, path.format(**self.ids), headers=headers)

    def refusals(self, routes: list[Route], token: str | None) -> list[str]:
        headers = bearer(token) if token else {}
        problems = [refusal_problem(self.call(r, headers), r, token) for r in routes]
        return [p for p in problems if p]

    def admissions(self, routes: list[Route], token: str) -> list[str]:
        problems = []
        for route in routes:
            response = self.call(route, bearer(token))
            if response.status_code == 401 or response.status_code >= 500:
                problems.append(f"{route}: {response.status_code} {response.text[:200]}")
        return problems


@pytest.fixture
def caller(service: ServiceServer, sim: SimulatorServer) -> Iterator[Caller]:
    with contextlib.closing(Caller(service, sim)) as it:
        yield it


ALL_PROTECTED = READ_ROUTES + OPERATOR_ROUTES


class TestRefused:
    def test_every_protected_route_refuses_missing_wrong_and_other_kinds_of_token(
        self, caller: Caller
    ) -> None:
        assert caller.refusals(ALL_PROTECTED, None) == []
        assert caller.refusals(ALL_PROTECTED, WRONG_TOKEN) == []
        assert caller.refusals(OPERATOR_ROUTES, READ_TOKEN) == []
        assert caller.refusals(READ_ROUTES, OPERATOR_TOKEN) == []

    def test_malformed_or_near_miss_authorization_is_refused(self, caller: Caller) -> None:
        route = ("GET", "/api/v1/users")
        cases: list[tuple[str, str | None]] = [
            (f"Basic {READ_TOKEN}", READ_TOKEN),
            (f"Bearer{READ_TOKEN}", READ_TOKEN),
            (READ_TOKEN, READ_TOKEN),
            (f"Bearer {READ_TOKEN}x", f"{READ_TOKEN}x"),
            (f"Bearer {READ_TOKEN[:-1]}", READ_TOKEN[:-1]),
            ("Bearer", None),
        ]
        problems = [
            refusal_problem(caller.call(route, {"Authorization": header}), route, presented)
            for header, presented in cases
        ]
        assert [p for p in problems if p] == []

    def test_nothing_is_readable_when_no_tokens_are_configured(
        self, start_service: StartService, sim: SimulatorServer
    ) -> None:
        service = start_service(read_api_tokens="", operator_api_tokens="")
        with contextlib.closing(Caller(service, sim)) as caller:
            assert caller.refusals(READ_ROUTES, READ_TOKEN) == []
            assert caller.refusals(OPERATOR_ROUTES, OPERATOR_TOKEN) == []


class TestAdmitted:
    def test_the_right_token_is_admitted_everywhere_and_open_routes_need_none(
        self, caller: Caller
    ) -> None:
        assert caller.admissions(READ_ROUTES, READ_TOKEN) == []
        assert caller.admissions(OPERATOR_ROUTES, OPERATOR_TOKEN) == []
        # The scheme is case-insensitive in HTTP.
        lower = {"Authorization": f"bearer {READ_TOKEN}"}
        assert caller.call(("GET", "/api/v1/users"), lower).status_code == 200
        for route in OPEN_ROUTES:
            assert caller.call(route, {}).status_code == 200, route

    def test_a_token_listed_for_both_works_for_both_and_rotation_keeps_both(
        self, start_service: StartService, sim: SimulatorServer
    ) -> None:
        service = start_service(
            read_api_tokens=f"{READ_TOKEN},{SHARED_TOKEN}",
            operator_api_tokens=f"{SHARED_TOKEN},{OPERATOR_TOKEN}",
        )
        with contextlib.closing(Caller(service, sim)) as caller:
            assert caller.admissions(ALL_PROTECTED, SHARED_TOKEN) == []
            assert caller.admissions(READ_ROUTES, READ_TOKEN) == []
            assert caller.admissions(OPERATOR_ROUTES, OPERATOR_TOKEN) == []
            assert caller.refusals(OPERATOR_ROUTES, READ_TOKEN) == []
            assert caller.refusals(READ_ROUTES, OPERATOR_TOKEN) == []
