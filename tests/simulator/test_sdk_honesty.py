"""The simulator against a source no one here wrote: Intercom's official Python SDK
(`python-intercom` 5.0.1, generated from Intercom's OpenAPI description).

Every API route of the simulator is driven with the SDK where the SDK has the call, and every
answer, and every webhook body the simulator sends, is parsed with the SDK's models in
pydantic's strict mode (the SDK itself builds its objects without validating them, so a wrong
shape would otherwise pass unnoticed)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from intercom import Intercom
from intercom.admins.types.admin import Admin
from intercom.teams.types.team import Team
from intercom.types.activity_log import ActivityLog
from intercom.types.activity_log_list import ActivityLogList
from intercom.types.admin_list import AdminList
from intercom.types.admin_with_app import AdminWithApp
from intercom.types.team_list import TeamList
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.simulator import SimulatorServer, generate_workspace
from app.simulator.runner import UvicornThread
from app.simulator.server import create_simulator_app
from app.simulator.webhooks import DELIVERY_TIMEOUT_SECONDS
from harness.service import SIM_SECRET, SIM_TOKEN

WEBHOOK_TOPICS = (
    "admin.added_to_workspace",
    "admin.removed_from_workspace",
    "admin.away_mode_updated",
    "admin.logged_in",
    "admin.logged_out",
    "admin.activity_log_event.created",
)


@pytest.fixture
def sim40() -> Iterator[SimulatorServer]:
    """40 teammates, as the issue counted (21 of them failed the SDK's parse before)."""
    with SimulatorServer(
        generate_workspace(40, 8, seed=1), access_token=SIM_TOKEN, client_secret=SIM_SECRET
    ) as server:
        yield server


def strict(model: type[BaseModel], body: Any) -> BaseModel:
    return model.model_validate(body, strict=True)


def test_every_simulator_route_answers_what_the_official_sdk_parses_strictly(
    sim40: SimulatorServer,
) -> None:
    sim = sim40
    admin_ids = sorted(sim.workspace.admins)
    team_id = sorted(sim.workspace.teams)[0]
    now = int(time.time())
    entries = [
        {"admin_id": admin_ids[0], "activity_type": "admin_login_success", "created_at": now - 60},
        {
            "admin_id": admin_ids[1],
            "activity_type": "admin_permission_change",
            "created_at": now - 30,
            "metadata": {"before": {"role": "a"}, "after": {"role": "b"}},
        },
    ]
    assert httpx.post(f"{sim.url}/_sim/activity", json={"entries": entries}).status_code == 200
    sdk = Intercom(token=SIM_TOKEN, base_url=sim.url)
    exercised: set[tuple[str, str]] = set()

    # Through the SDK's own calls: they reach the routes and read the answers.
    me = sdk.admins.identify()
    assert me is not None
    assert me.app is not None
    assert me.app.id_code == sim.workspace.id_code
    assert len(sdk.admins.list().admins or []) == 40
    found = sdk.admins.find(admin_id=int(admin_ids[3]))
    assert found is not None
    assert found.id == admin_ids[3]
    assert len(sdk.teams.list().teams or []) == 8
    assert sdk.teams.find(team_id=team_id).id == team_id
    logs = sdk.admins.list_all_activity_logs(created_at_after=str(now - 3600))
    assert [e.activity_type for e in logs.activity_logs or [] if e] == [
        "admin_login_success",
        "admin_permission_change",
    ]

    # Strictly, every answer (both API versions, with and without avatars).
    with httpx.Client(base_url=sim.url, headers=sim.auth_headers) as api:
        for version in ("2.14", "2.16"):
            headers = {"Intercom-Version": version}

            def get(path: str, route: str, headers: dict[str, str] = headers, **params: Any) -> Any:
                response = api.get(path, params=params, headers=headers)
                assert response.status_code == 200, (path, response.text)
                exercised.add(("GET", route))
                return response.json()

            strict(AdminWithApp, get("/me", "/me"))
            for flag in ("false", "true"):
                strict(AdminList, get("/admins", "/admins", display_avatar=flag))
                for admin_id in admin_ids:
                    strict(
                        Admin,
                        get(f"/admins/{admin_id}", "/admins/{admin_id}", display_avatar=flag),
                    )
            strict(TeamList, get("/teams", "/teams"))
            for team in sim.workspace.teams:
                body = get(f"/teams/{team}", "/teams/{team_id}")
                strict(Team, body)
                # Optional in the SDK, but part of Intercom's team object.
                assert {"assignment_limit", "distribution_method"} <= set(body)
            listed = get(
                "/admins/activity_logs", "/admins/activity_logs", created_at_after=now - 3600
            )
            strict(ActivityLogList, listed)
        v216 = {"Intercom-Version": "2.16"}
        searched = api.post(
            "/admins/activity_logs/search",
            json={"created_at_after": str(now - 3600), "per_page": 1},
            headers=v216,
        )
        exercised.add(("POST", "/admins/activity_logs/search"))
        page = strict(ActivityLogList, searched.json())
        assert isinstance(page, ActivityLogList)
        assert page.pages is not None
        assert page.pages.next is not None
        types = api.get("/admins/activity_log_event_types", headers=v216).json()
        exercised.add(("GET", "/admins/activity_log_event_types"))
        # No SDK model for this list: its documented shape, checked by hand.
        assert types["type"] == "activity_log_event_type.list"
        assert all(isinstance(t, str) for t in types["event_types"])

        # The write endpoints: python-intercom 5.0.1 has no call for either (they
        # are 2.17 and Preview), so they are driven by hand; the team answer is the SDK's Team.
        preview = {"Intercom-Version": "Preview"}
        members = [admin_ids[0], admin_ids[1]]
        put = api.put(f"/teams/{team_id}", json={"admin_ids": members}, headers=preview)
        assert put.status_code == 200, put.text
        exercised.add(("PUT", "/teams/{team_id}"))
        updated = strict(Team, put.json())
        assert isinstance(updated, Team)
        assert sorted(str(a) for a in updated.admin_ids or []) == sorted(members)
        target, leaving = admin_ids[0], admin_ids[-1]
        removed = api.delete(
            "/admins/remove",
            params={
                "admin_id": leaving,
                "reassign_messages_admin_id": target,
                "reassign_owner_admin_id": target,
                "reassign_articles_author_id": target,
                "reassign_conversations_admin_id": target,
            },
            headers={"Intercom-Version": "2.17"},
        )
        assert removed.status_code == 200, removed.text
        exercised.add(("DELETE", "/admins/remove"))
        # No SDK model: Intercom documents the answer as the removed teammate's id.
        assert removed.json()["id"] == leaving

    api_routes = {
        (method, route.path)
        for route in create_simulator_app(
            sim.workspace, access_token=SIM_TOKEN, client_secret=SIM_SECRET
        ).routes
        if isinstance(route, Route)
        and not route.path.startswith("/_sim")
        and route.path != "/{path:path}"
        for method in route.methods or ()
        if method != "HEAD"
    }
    assert api_routes == exercised


def test_every_webhook_body_the_simulator_sends_parses_strictly(sim40: SimulatorServer) -> None:
    # A loopback endpoint that keeps what it is sent: the bodies as they travelled.
    bodies: list[bytes] = []

    async def keep(request: Request) -> Response:
        bodies.append(await request.body())
        return Response("ok")

    app = Starlette(routes=[Route("/hook", keep, methods=["POST"])])
    admin_id = sorted(sim40.workspace.admins)[5]
    with UvicornThread(app, host="127.0.0.1", port=0, name="receiver") as hook:
        url = f"{hook.url}/hook"
        for topic in (*WEBHOOK_TOPICS, "ping"):
            response = httpx.post(
                f"{sim40.url}/_sim/webhooks/send",
                json={
                    "url": url,
                    "topic": topic,
                    "admin_id": admin_id,
                    "activity_type": "admin_login_success",
                    "timeout": DELIVERY_TIMEOUT_SECONDS,
                },
            )
            assert response.json()["status"] == 200, response.text
    assert len(bodies) == len(WEBHOOK_TOPICS) + 1
    for body in bodies:
        envelope = orjson.loads(body)
        assert envelope["type"] == "notification_event"
        item = envelope["data"]["item"]
        if envelope["topic"] == "ping":
            assert item["type"] == "ping"
        elif envelope["topic"] == "admin.activity_log_event.created":
            entry = strict(ActivityLog, item)
            assert isinstance(entry, ActivityLog)
            assert entry.performed_by is not None
            assert entry.performed_by.id == admin_id
        else:
            parsed = strict(Admin, item)
            assert isinstance(parsed, Admin)
            assert parsed.id == admin_id


@pytest.mark.parametrize("status", [502, 504])
def test_gateway_errors_answer_html_like_intercoms_edge(
    sim40: SimulatorServer, status: int
) -> None:
    sim40.add_fault("/admins", status=status)
    response = httpx.get(f"{sim40.url}/admins", headers=sim40.auth_headers)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/html")
    assert response.text.startswith("<html>")
    # Intercom's own 5xx (500, 503) stay an error.list.
    sim40.add_fault("/admins", status=503)
    body = httpx.get(f"{sim40.url}/admins", headers=sim40.auth_headers).json()
    assert body["errors"][0]["code"] == "service_unavailable"
