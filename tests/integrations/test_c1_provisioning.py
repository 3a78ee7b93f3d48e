"""C1 provisions through `integrations/c1/baton-http.yaml` (issue 19.5): this test plays
baton-http's part for the `provisioning` blocks as ConductorOne/docs
`developer/http-authoring.mdx` ("Provisioning", "URL templates") describes them: the request's
`tmpl:` URL rendered with `.resource.id` and `.principal.id`, sent with the connector's auth,
and `success_condition` evaluated with real CEL over `response.status_code`. The effect is then
read back through the same file's grant lists, as C1's next sync would."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from celpy import celtypes

from app.main import create_app
from app.simulator import SimulatorServer
from harness.service import READ_TOKEN, ServiceServer, make_settings
from tests.integrations.c1_tools import BatonHttp, cel_eval
from tests.integrations.test_c1_integrations import ENV_VAR, HTTP_CONFIG, _route_shape, expand, load

_TEMPLATE = re.compile(r"\{\{\s*\.(resource|principal)\.id\s*\}\}")


def render(value: str, resource: dict[str, str], principal: dict[str, str]) -> str:
    """A `tmpl:` value with the variables the guide lists for provisioning (`.resource.id`,
    `.principal.id`); any other template is not used by our file and fails here."""
    scope = {"resource": resource, "principal": principal}
    body = value.removeprefix("tmpl:")
    rendered = _TEMPLATE.sub(lambda m: scope[m.group(1)]["id"], body)
    if "{{" in rendered:
        raise ValueError(f"template not mirrored: {value!r}")
    return rendered


def provisioning_blocks(config: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for type_id, resource_type in config["resource_types"].items():
        for entitlement in resource_type.get("static_entitlements", []):
            for action, block in (entitlement.get("provisioning") or {}).items():
                yield type_id, action, block


@pytest.fixture
def connector(
    start_service: Callable[..., ServiceServer], sim: SimulatorServer
) -> Iterator[tuple[ServiceServer, httpx.Client, dict[str, Any]]]:
    """The service with C1's one connector token allowed to read and to provision, and an
    HTTP client set up as baton-http's `connect` block says."""
    with sim.workspace.lock:
        target = next(iter(sim.workspace.admins))
    service = start_service(provisioning_api_tokens=READ_TOKEN, removal_reassign_admin_id=target)
    config = load(HTTP_CONFIG)
    env = {"INTERCOM_SYNC_URL": service.url, "INTERCOM_SYNC_READ_TOKEN": READ_TOKEN}
    connect = config["connect"]
    headers = {
        **connect["request_defaults"]["headers"],
        "Authorization": f"Bearer {expand(connect['auth']['token'], env)}",
    }
    with httpx.Client(
        base_url=expand(connect["base_url"], env), headers=headers, timeout=30
    ) as http:
        yield service, http, config


def provision(
    http: httpx.Client,
    block: dict[str, Any],
    resource: dict[str, str],
    principal: dict[str, str],
) -> tuple[bool, httpx.Response]:
    """One grant or revoke as baton-http performs it; returns (success, response)."""
    request = block["request"]
    kwargs: dict[str, Any] = {}
    if "body" in request:
        kwargs["content"] = render(request["body"], resource, principal).encode()
    response = http.request(
        request.get("method", "GET"), render(request["url"], resource, principal), **kwargs
    )
    condition = block["success_condition"]
    assert condition.startswith("cel:")
    outcome = cel_eval(
        condition.removeprefix("cel:"),
        {"response": {"status_code": response.status_code, "body": response.json()}},
    )
    # baton-http needs a boolean here (cel-python answers its own BoolType).
    assert isinstance(outcome, celtypes.BoolType), condition
    return bool(outcome), response


def grants_of(http: httpx.Client, config: dict[str, Any], type_id: str, rid: str) -> set[str]:
    def get(url: str, params: dict[str, Any]) -> Any:
        response = http.get(url, params=params)
        assert response.status_code == 200, (url, response.text)
        return response.json()

    return BatonHttp(config, get, page_size=50).grants(type_id, {"id": rid, "display_name": rid})


def test_the_blocks_are_where_the_spec_puts_them_and_call_write_routes(database_url: str) -> None:
    config = load(HTTP_CONFIG)
    found = {(t, a) for t, a, _ in provisioning_blocks(config)}
    assert {("team", "grant"), ("team", "revoke")} <= found
    # Teammates are invited in Intercom: there is no workspace grant, and nothing else.
    assert found - {("team", "grant"), ("team", "revoke"), ("workspace", "revoke")} == set()
    document = create_app(make_settings(database_url, None)).openapi()
    routes = {_route_shape(path): ops for path, ops in document["paths"].items()}
    for type_id, action, block in provisioning_blocks(config):
        request = block["request"]
        shape = _route_shape(request["url"])
        assert shape in routes, (type_id, action, request["url"])
        assert request["method"].lower() in routes[shape], (type_id, action)
        assert not ENV_VAR.search(str(block)), "provisioning uses the connector's own auth"


def test_c1_grants_and_revokes_team_membership_through_the_config(
    sim: SimulatorServer, connector: tuple[ServiceServer, httpx.Client, dict[str, Any]]
) -> None:
    _service, http, config = connector
    member = config["resource_types"]["team"]["static_entitlements"][0]
    assert member["id"] == "member"
    with sim.workspace.lock:
        team_id, team = next(
            (tid, t) for tid, t in sim.workspace.teams.items() if len(t.admin_ids) >= 2
        )
        principal_id = next(
            a.id
            for a in list(sim.workspace.admins.values())[3:]
            if a.id not in team.admin_ids and not a.email.startswith("operator+")
        )
    resource = {"id": team_id, "display_name": team.name}
    principal = {"id": principal_id}
    grant_id = f"team:{team_id}:member:user:{principal_id}"
    assert grant_id not in grants_of(http, config, "team", team_id)

    ok, response = provision(http, member["provisioning"]["grant"], resource, principal)
    assert ok, response.text
    assert response.json()["result"] == "added"
    assert principal_id in sim.workspace.teams[team_id].admin_ids
    assert grant_id in grants_of(http, config, "team", team_id)

    # C1 retries a grant it is unsure of: still a success, nothing sent twice.
    ok, response = provision(http, member["provisioning"]["grant"], resource, principal)
    assert ok
    assert response.json()["result"] == "unchanged"

    ok, response = provision(http, member["provisioning"]["revoke"], resource, principal)
    assert ok, response.text
    assert response.json()["result"] == "removed"
    assert principal_id not in sim.workspace.teams[team_id].admin_ids
    assert grant_id not in grants_of(http, config, "team", team_id)


def test_a_refused_grant_is_a_failure_c1_sees_with_the_reason(
    sim: SimulatorServer, connector: tuple[ServiceServer, httpx.Client, dict[str, Any]]
) -> None:
    _service, http, config = connector
    member = config["resource_types"]["team"]["static_entitlements"][0]
    httpx.put(f"{sim.url}/_sim/provisioning", json={"team_writes": "api_plan_restricted"})
    with sim.workspace.lock:
        team_id, team = next(iter(sim.workspace.teams.items()))
        principal_id = next(a for a in sim.workspace.admins if a not in team.admin_ids)
        protected = next(iter(sim.workspace.admins))  # the reassignment target
        protected_team = sim.workspace.admins[protected].team_ids[0]
    ok, response = provision(
        http, member["provisioning"]["grant"], {"id": team_id}, {"id": principal_id}
    )
    assert not ok
    assert response.json()["error"]["code"] == "intercom_refused"
    assert "api_plan_restricted" in response.json()["error"]["message"]
    ok, response = provision(
        http, member["provisioning"]["revoke"], {"id": protected_team}, {"id": protected}
    )
    assert not ok
    assert response.json()["error"]["code"] == "protected_teammate"


def test_c1_revokes_workspace_membership_by_removing_the_teammate(
    sim: SimulatorServer, connector: tuple[ServiceServer, httpx.Client, dict[str, Any]]
) -> None:
    _service, http, config = connector
    workspace = config["resource_types"].get("workspace")
    if workspace is None:
        pytest.skip("the workspace resource type (issue 19.1) is not in this configuration yet")
    member = next(e for e in workspace["static_entitlements"] if e["id"] == "member")
    assert set(member["provisioning"]) == {"revoke"}
    with sim.workspace.lock:
        victim = next(
            a.id
            for a in list(sim.workspace.admins.values())[3:]
            if not a.email.startswith("operator+")
        )
    ok, response = provision(
        http, member["provisioning"]["revoke"], {"id": sim.workspace.id_code}, {"id": victim}
    )
    assert ok, response.text
    assert response.json()["result"] == "removed"
    assert victim not in sim.workspace.admins
    users = http.get("/api/v1/users", params={"limit": 1000}).json()["items"]
    assert victim not in {u["id"] for u in users}
