"""Roles: with INTERCOM_API_VERSION 2.16+ a third resource type `role`, entitlement
`role:{id}:assigned` and grants `role:{id}:assigned:user:{user}`; with older versions none."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from app.simulator import SimulatorServer
from harness.service import OPERATOR_TOKEN, ServiceServer, snapshot
from harness.waiting import wait_for

ROLE_TYPE = {"id": "role", "display_name": "Role", "traits": ["role"]}


def resync(service: ServiceServer) -> None:
    with service.client(OPERATOR_TOKEN) as client:
        run = client.post("/resync").json()
        done = wait_for(
            lambda: (
                (r := client.get(f"/sync-runs/{run['id']}").json())["status"]
                not in ("queued", "running")
                and r
            ),
            timeout=30,
            what="the resync to finish",
        )
    assert done["status"] == "succeeded", done


def all_items(client: httpx.Client, path: str, limit: int = 5) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        page = client.get(path, params=params).json()
        out.extend(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return out


def sim_roles(sim: SimulatorServer) -> tuple[dict[str, str], dict[str, str]]:
    """(role id -> name, teammate id -> role id) as the simulator holds them."""
    with sim.workspace.lock:
        held = {a.id: a.role for a in sim.workspace.admins.values() if a.role is not None}
    return {r[0]: r[1] for r in held.values()}, {uid: r[0] for uid, r in held.items()}


def role_grants(body: dict[str, Any]) -> set[str]:
    return {g["id"] for g in body["grants"] if g["id"].startswith("role:")}


def test_with_2_16_roles_are_a_third_resource_type_with_entitlements_and_grants(
    start_service: Callable[..., ServiceServer], sim: SimulatorServer
) -> None:
    service = start_service(intercom_api_version="2.16")
    names, holder_roles = sim_roles(sim)
    assert len(names) == 3  # the generated workspace uses three roles
    with service.client() as client:
        body = snapshot(client)
        paged_roles = all_items(client, "/api/v1/roles", limit=2)
        paged_grants = all_items(client, "/api/v1/grants", limit=7)
        single = {rid: client.get(f"/api/v1/roles/{rid}").json() for rid in names}
        members = {
            rid: [m["user_id"] for m in all_items(client, f"/api/v1/roles/{rid}/members", 2)]
            for rid in names
        }
        foreign_cursor = client.get("/api/v1/users", params={"limit": 1}).json()["next_cursor"]
        first_role, second_role = sorted(names)[:2]
        role_cursor = client.get(f"/api/v1/roles/{first_role}/members", params={"limit": 1}).json()[
            "next_cursor"
        ]
        refused = {
            "unknown role": client.get("/api/v1/roles/nope/members"),
            "users cursor": client.get(
                f"/api/v1/roles/{first_role}/members", params={"cursor": foreign_cursor}
            ),
            "another role's cursor": client.get(
                f"/api/v1/roles/{second_role}/members", params={"cursor": role_cursor}
            ),
            "limit 0": client.get(f"/api/v1/roles/{first_role}/members", params={"limit": 0}),
        }

    assert ROLE_TYPE in body["resource_types"]
    assert [t["id"] for t in body["resource_types"]] == ["user", "team", "role", "workspace"]
    assert {r["id"]: r["display_name"] for r in body["roles"]} == names
    for role in body["roles"]:
        assert sorted(role["member_ids"]) == sorted(
            uid for uid, rid in holder_roles.items() if rid == role["id"]
        )
    role_entitlements = [e for e in body["entitlements"] if e["resource_type"] == "role"]
    assert role_entitlements == [
        {
            "id": f"role:{rid}:assigned",
            "resource_type": "role",
            "resource_id": rid,
            "slug": "assigned",
            "display_name": f"{names[rid]} Role",
            "purpose": "assignment",
            "grantable_to": ["user"],
        }
        for rid in sorted(names)
    ]
    expected = {f"role:{rid}:assigned:user:{uid}" for uid, rid in holder_roles.items()}
    assert role_grants(body) == expected
    for grant in body["grants"]:
        if grant["id"].startswith("role:"):
            rid, uid = grant["id"].split(":")[1], grant["id"].split(":")[-1]
            assert grant["entitlement_id"] == f"role:{rid}:assigned"
            assert grant["principal"] == {"resource_type": "user", "resource_id": uid}
    for user in body["users"]:
        assert user["role_ids"] == (
            [holder_roles[user["id"]]] if user["id"] in holder_roles else []
        )

    # The paginated views agree with the snapshot.
    assert paged_roles == body["roles"]
    assert single == {r["id"]: r for r in body["roles"]}
    assert {g["id"]: g for g in paged_grants} == {g["id"]: g for g in body["grants"]}
    assert len(paged_grants) == len(body["grants"])
    # One role's holders, in user id order: its member_ids, which are its grants.
    assert members == {r["id"]: r["member_ids"] for r in body["roles"]}
    assert all(ids == sorted(ids) for ids in members.values())
    assert {(what, r.status_code, r.json()["error"]["code"]) for what, r in refused.items()} == {
        ("unknown role", 404, "not_found"),
        ("users cursor", 400, "invalid_cursor"),
        ("another role's cursor", 400, "invalid_cursor"),
        ("limit 0", 400, "invalid_request"),
    }


def test_changing_a_role_and_resyncing_moves_the_grant(
    start_service: Callable[..., ServiceServer], sim: SimulatorServer
) -> None:
    service = start_service(intercom_api_version="2.16")
    _, holder_roles = sim_roles(sim)
    admin_id = next(uid for uid, rid in sorted(holder_roles.items()) if rid != "2")
    old_role = holder_roles[admin_id]
    with service.client() as client:
        before = snapshot(client)
        sim.workspace.set_role(admin_id, ("2", "Support Agent"))
        resync(service)
        after = snapshot(client)
        user = client.get(f"/api/v1/users/{admin_id}").json()
        changes = client.get("/api/v1/changes", params={"since": before["version"]}).json()
        grants = {g["id"] for g in all_items(client, "/api/v1/grants", limit=50)}

    moved_from = f"role:{old_role}:assigned:user:{admin_id}"
    moved_to = f"role:2:assigned:user:{admin_id}"
    assert moved_from in role_grants(before)
    assert moved_to not in role_grants(before)
    assert role_grants(after) == (role_grants(before) - {moved_from}) | {moved_to}
    assert moved_to in grants
    assert moved_from not in grants
    assert user["role_ids"] == ["2"]
    assert after["version"] == before["version"] + 1
    assert {(c["resource_type"], c["resource_id"], c["op"]) for c in changes["changes"]} >= {
        ("grant", moved_from, "delete"),
        ("grant", moved_to, "upsert"),
    }
    # Team memberships are untouched by a role change.
    assert {g for g in (x["id"] for x in after["grants"]) if g.startswith("team:")} == {
        g for g in (x["id"] for x in before["grants"]) if g.startswith("team:")
    }


def test_with_2_14_there_are_no_roles_anywhere(
    service: ServiceServer, sim: SimulatorServer
) -> None:
    assert service.settings.intercom_api_version == "2.14"
    with service.client() as client:
        body = snapshot(client)
        grants = all_items(client, "/api/v1/grants", limit=50)
        users = all_items(client, "/api/v1/users", limit=50)
        roles = client.get("/api/v1/roles").json()
        single = client.get("/api/v1/roles/1")
        members = client.get("/api/v1/roles/1/members")
    assert [t["id"] for t in body["resource_types"]] == ["user", "team", "workspace"]
    assert "roles" not in body
    assert all(e["resource_type"] in ("team", "workspace") for e in body["entitlements"])
    assert not role_grants(body)
    assert all(g["id"].startswith(("team:", "workspace:")) for g in grants)
    assert all("role_ids" not in u for u in [*body["users"], *users])
    assert roles["items"] == []
    assert roles["next_cursor"] is None
    assert single.status_code == 404
    assert members.status_code == 404


def test_the_simulator_sends_role_only_from_2_16(sim: SimulatorServer) -> None:
    with httpx.Client(base_url=sim.url, headers=sim.auth_headers, timeout=10) as client:
        by_version = {
            version: client.get("/admins", headers={"Intercom-Version": version}).json()["admins"]
            for version in ("2.11", "2.14", "2.15", "2.16", "Preview")
        }
    for version in ("2.11", "2.14", "2.15"):
        assert not any("role" in admin for admin in by_version[version]), version
    for version in ("2.16", "Preview"):
        humans = [a for a in by_version[version] if a["name"] != "Fin"]
        assert all(a["role"]["type"] == "role" for a in humans), version


def test_the_service_asks_intercom_for_the_configured_version(
    start_service: Callable[..., ServiceServer], sim: SimulatorServer
) -> None:
    start_service(intercom_api_version="2.16")
    assert {r.headers.get("intercom-version") for r in sim.requests("/admins")} == {"2.16"}


def test_going_back_to_2_14_hides_stored_roles_and_the_next_sync_drops_them(
    start_service: Callable[..., ServiceServer], sim: SimulatorServer
) -> None:
    first = start_service(intercom_api_version="2.16")
    with first.client() as client:
        assert snapshot(client)["roles"]
    first.stop()
    # The same store, now read by a 2.14 service that has not synced yet.
    service = start_service(intercom_api_version="2.14", sync_on_startup=False)
    with service.client() as client:
        body = snapshot(client)
        assert "roles" not in body
        assert not role_grants(body)
        assert client.get("/api/v1/roles").json()["items"] == []
        assert client.get("/api/v1/roles/1").status_code == 404
        assert client.get("/api/v1/roles/1/members").status_code == 404
        assert all(
            g["id"].startswith(("team:", "workspace:"))
            for g in all_items(client, "/api/v1/grants", 50)
        )
        version = body["version"]
        resync(service)
        changes = client.get("/api/v1/changes", params={"since": version}).json()["changes"]
    assert {c["resource_id"] for c in changes if c["resource_type"] == "role"} == {"1", "2", "3"}
    assert all(c["op"] == "delete" for c in changes if c["resource_type"] in ("role", "grant"))
