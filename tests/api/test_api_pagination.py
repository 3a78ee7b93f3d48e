"""The paginated views and single resources of the C1 API: limits, opaque cursors,
stable keyset paging while webhooks change the store, and objects equal to the snapshot's."""

from __future__ import annotations

import base64
import itertools
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

from app.simulator import SimulatorServer
from app.simulator.records import SimAdmin
from app.simulator.webhooks import admin_webhook_item, build_notification, encode_notification
from harness.service import ServiceServer, signed_headers, snapshot
from harness.waiting import wait_for

PAGED_ROUTES = ["/api/v1/users", "/api/v1/teams", "/api/v1/grants", "/api/v1/roles"]
_clock = itertools.count(int(time.time()) + 10)


def deliver(service: ServiceServer, sim: SimulatorServer, topic: str, admin: SimAdmin) -> None:
    """Sign and POST one admin notification, as Intercom would."""
    item = admin_webhook_item(admin)
    if topic == "admin.removed_from_workspace":
        item["team_ids"] = []
    # Strictly increasing `created_at`, so no delivery is ignored as older than the last one.
    envelope = build_notification(
        topic, item, app_id=sim.workspace.id_code, created_at=next(_clock)
    )
    body = encode_notification(envelope)
    response = httpx.post(
        f"{service.url}/webhooks/intercom", content=body, headers=signed_headers(body), timeout=10
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "accepted"}


def page_through(
    client: httpx.Client,
    path: str,
    *,
    limit: int,
    between: Callable[[int], None] | None = None,
    **params: Any,
) -> list[dict[str, Any]]:
    """Every page of `path`, calling `between(page_number)` after each page but the last."""
    pages: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query: dict[str, Any] = {"limit": limit, **params}
        if cursor is not None:
            query["cursor"] = cursor
        response = client.get(path, params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        assert set(page) == {"items", "next_cursor", "version"}
        assert len(page["items"]) <= limit
        pages.append(page)
        cursor = page["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 1000, "the cursor never ran out"
        if between is not None:
            between(len(pages))


def items(pages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [item for page in pages for item in page["items"]]


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code


def current_version(client: httpx.Client) -> int:
    version: int = client.get("/api/v1/users", params={"limit": 1}).json()["version"]
    return version


class TestLimits:
    def test_a_limit_outside_1_to_1000_is_a_400_with_the_error_shape(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        team_id = next(iter(sim.workspace.teams))
        with service.client() as client:
            for path in [*PAGED_ROUTES, f"/api/v1/teams/{team_id}/members"]:
                for limit in ["0", "1001", "-1", "abc", "1.5", ""]:
                    response = client.get(path, params={"limit": limit})
                    assert response.status_code == 400, (path, limit)
                    assert_error(response, 400)
                for limit in ["1", "1000"]:
                    assert client.get(path, params={"limit": limit}).status_code == 200

    def test_the_default_page_is_100_items_and_1000_is_accepted(
        self, start_service: Callable[..., ServiceServer], sim: SimulatorServer
    ) -> None:
        # 30 generated teammates plus 100 more: enough to fill more than one default page.
        for n in range(100):
            sim.workspace.upsert_admin(
                SimAdmin(id=f"77{n:04d}", name=f"Extra {n}", email=f"extra{n}@acme.example")
            )
        service = start_service()
        with service.client() as client:
            first = client.get("/api/v1/users").json()
            assert len(first["items"]) == 100
            assert first["next_cursor"] is not None
            rest = client.get("/api/v1/users", params={"cursor": first["next_cursor"]}).json()
            assert len(rest["items"]) == 30
            assert rest["next_cursor"] is None
            whole = client.get("/api/v1/users", params={"limit": 1000}).json()
        assert len(whole["items"]) == 130
        assert whole["next_cursor"] is None
        assert whole["items"] == first["items"] + rest["items"]


class TestCursors:
    def test_paging_every_view_returns_the_snapshot_exactly_once_in_id_order(
        self, service: ServiceServer
    ) -> None:
        with service.client() as client:
            body = snapshot(client)
            user_pages = page_through(client, "/api/v1/users", limit=7)
            team_pages = page_through(client, "/api/v1/teams", limit=4)
            grant_pages = page_through(client, "/api/v1/grants", limit=9)
            exact = page_through(client, "/api/v1/teams", limit=len(body["teams"]))
            members = {
                team["id"]: [
                    m["user_id"]
                    for m in items(
                        page_through(client, f"/api/v1/teams/{team['id']}/members", limit=2)
                    )
                ]
                for team in body["teams"]
            }
        users, teams, grants = items(user_pages), items(team_pages), items(grant_pages)
        assert users == body["users"]
        assert teams == body["teams"]
        assert sorted(g["id"] for g in grants) == sorted(g["id"] for g in body["grants"])
        assert {g["id"]: g for g in grants} == {g["id"]: g for g in body["grants"]}
        assert len(grants) == len(body["grants"])
        assert members == {team["id"]: team["member_ids"] for team in body["teams"]}
        # Every page states the version it was read at: here, nothing changed meanwhile.
        assert {p["version"] for p in user_pages + team_pages + grant_pages} == {body["version"]}
        # A page that takes exactly the remaining items may be followed by an empty one.
        assert [len(p["items"]) for p in exact] in ([len(teams)], [len(teams), 0])

    def test_tampered_random_and_foreign_cursors_are_400_invalid_cursor(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        team_a, team_b = sorted(sim.workspace.teams)[:2]
        with service.client() as client:
            users_cursor = client.get("/api/v1/users", params={"limit": 3}).json()["next_cursor"]
            members_cursor = client.get(
                f"/api/v1/teams/{team_a}/members", params={"limit": 1}
            ).json()["next_cursor"]
            assert users_cursor
            assert members_cursor
            raw = base64.urlsafe_b64decode(users_cursor + "=" * (-len(users_cursor) % 4))
            # Same signature, a different position: the MAC no longer matches.
            forged = raw.replace(b'"p":"', b'"p":"0', 1)
            assert forged != raw
            flipped = bytearray(raw)
            flipped[-1] ^= 0x01
            bad = {
                "tampered position": base64.urlsafe_b64encode(forged).decode().rstrip("="),
                "flipped signature": base64.urlsafe_b64encode(bytes(flipped)).decode(),
                "random": "bm90LWEtY3Vyc29yLWF0LWFsbA",
                "not base64": "%%%***",
                "short": "YQ",
            }
            for what, cursor in bad.items():
                response = client.get("/api/v1/users", params={"cursor": cursor})
                assert response.status_code == 400, what
                assert_error(response, 400, "invalid_cursor")
            # A real cursor, but issued by another listing.
            foreign = [
                ("/api/v1/teams", users_cursor),
                ("/api/v1/grants", users_cursor),
                ("/api/v1/roles", users_cursor),
                (f"/api/v1/teams/{team_a}/members", users_cursor),
                (f"/api/v1/teams/{team_b}/members", members_cursor),
                ("/api/v1/users", members_cursor),
            ]
            for path, cursor in foreign:
                assert_error(client.get(path, params={"cursor": cursor}), 400, "invalid_cursor")
            # The removed-inclusive listing is another listing too.
            assert_error(
                client.get(
                    "/api/v1/users", params={"cursor": users_cursor, "include_removed": "true"}
                ),
                400,
                "invalid_cursor",
            )
            # The genuine cursor still works where it came from.
            assert client.get("/api/v1/users", params={"cursor": users_cursor}).status_code == 200

    def test_paging_while_webhooks_change_others_never_skips_or_repeats_the_unchanged(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        with service.client() as client:
            before = snapshot(client)
        ids = [u["id"] for u in before["users"]]
        # Removals on both sides of wherever the cursor is, and arrivals whose ids sort before,
        # between and after the existing ones.
        to_remove = [ids[1], ids[-2], ids[12], ids[20], ids[5], ids[26]]
        newcomers = [
            SimAdmin(id=new_id, name=f"New {n}", email=f"new{n}@acme.example")
            for n, new_id in enumerate(
                ["100", ids[3] + "5", ids[15] + "0", "999999999999", ids[22] + "1", "5"]
            )
        ]
        changed = set(to_remove) | {a.id for a in newcomers}
        admins = {a.id: a for a in sim.workspace.admins.values()}
        applied: list[int] = []

        with service.client() as client:

            def change_something(page_number: int) -> None:
                index = page_number - 1
                if index >= len(to_remove):
                    return
                version = current_version(client)
                deliver(service, sim, "admin.removed_from_workspace", admins[to_remove[index]])
                deliver(service, sim, "admin.added_to_workspace", newcomers[index])
                # Wait until both are applied, so the next page really reads a changed store.
                wait_for(
                    lambda: (
                        current_version(client) > version
                        and client.get(f"/api/v1/users/{newcomers[index].id}").status_code == 200
                        and client.get(f"/api/v1/users/{to_remove[index]}").json()["status"]
                        == "deleted"
                    ),
                    timeout=20,
                    what="the webhooks to be applied",
                )
                applied.append(index)

            pages = page_through(client, "/api/v1/users", limit=7, between=change_something)
            seen_versions = [p["version"] for p in pages]
            after = snapshot(client)

        listed = Counter(u["id"] for u in items(pages))
        unchanged = set(ids) - changed
        assert {uid: listed[uid] for uid in unchanged} == dict.fromkeys(unchanged, 1)
        assert max(listed.values()) == 1, "an item was repeated"
        # The store really changed under the pager, and each page said so.
        assert seen_versions == sorted(seen_versions)
        assert seen_versions[-1] > seen_versions[0]
        assert len(applied) >= 3
        assert {u["id"] for u in after["users"]} == (set(ids) - {to_remove[i] for i in applied}) | {
            newcomers[i].id for i in applied
        }


class TestSingleResources:
    def test_each_user_and_team_equals_the_snapshot_object_and_unknown_ones_are_404(
        self, service: ServiceServer
    ) -> None:
        with service.client() as client:
            body = snapshot(client)
            for user in body["users"]:
                response = client.get(f"/api/v1/users/{user['id']}")
                assert response.status_code == 200
                assert response.json() == user
            for team in body["teams"]:
                response = client.get(f"/api/v1/teams/{team['id']}")
                assert response.status_code == 200
                assert response.json() == team
            for path in [
                "/api/v1/users/does-not-exist",
                "/api/v1/teams/does-not-exist",
                "/api/v1/teams/does-not-exist/members",
                "/api/v1/roles/does-not-exist",
            ]:
                assert_error(client.get(path), 404, "not_found")

    def test_a_removed_user_answers_with_status_deleted_as_in_include_removed(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        admin = next(a for a in sim.workspace.admins.values() if a.team_ids)
        deliver(service, sim, "admin.removed_from_workspace", admin)
        with service.client() as client:
            removed = wait_for(
                lambda: (
                    (r := client.get(f"/api/v1/users/{admin.id}").json())["status"] == "deleted"
                    and r
                ),
                timeout=20,
                what="the removal to be applied",
            )
            with_removed = snapshot(client, include_removed="true")
            paged = items(page_through(client, "/api/v1/users", limit=8, include_removed="true"))
            plain = items(page_through(client, "/api/v1/users", limit=8))
        assert removed["removed_at"]
        assert removed["team_ids"] == []
        assert removed == next(u for u in with_removed["users"] if u["id"] == admin.id)
        assert paged == with_removed["users"]
        assert admin.id not in {u["id"] for u in plain}
